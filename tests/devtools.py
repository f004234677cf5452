"""A headless Chromium driven through its DevTools protocol over one local websocket.

Just what the lineage page's render test needs: open a URL, run JavaScript in the page, click with
the mouse like a person (so a covered or hidden control fails the click), take a screenshot. It uses
the system's Chromium (Debian's `chromium`, which `make test` installs when it can) and the
`websocket-client` package; nothing is downloaded, and every host but 127.0.0.1 is unresolvable.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW_TO_INSTALL = (
    "No headless Chromium found ($CHROMIUM, then " + ", ".join(CHROMIUM_NAMES) + " on PATH). "
    "`make test` installs Debian's chromium itself when run as root; otherwise install it with "
    "`sudo apt-get install chromium` (Debian; `chromium-browser` on Ubuntu) or point CHROMIUM at a "
    "Chrome/Chromium binary, e.g. `make test CHROMIUM=/path/to/chrome`."
)


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """``with Chromium(binary, folder) as page:`` starts a headless browser with its own profile in
    ``folder`` and stops its whole process group on exit, whatever happened."""

    def __init__(
        self, binary: str, folder: Path, width: int = 1400, height: int = 900, timeout: float = 30
    ) -> None:
        self.binary, self.folder, self.timeout = binary, folder, timeout
        self.width, self.height = width, height
        self.log = folder / "chromium.log"
        self.exceptions: list[str] = []  # uncaught in the page's JavaScript
        self.console_errors: list[str] = []  # e.g. a resource that failed to load
        self._id = 0
        self._process: subprocess.Popen | None = None
        self._socket: websocket.WebSocket | None = None

    def __enter__(self) -> Chromium:
        profile = self.folder / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    f"--window-size={self.width},{self.height}",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._connect(profile / "DevToolsActivePort")
            self.call("Runtime.enable")
            self.call("Log.enable")
            self.call("Page.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
        if self._process is not None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self._process.pid, sig)
                    self._process.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def _connect(self, port_file: Path) -> None:
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self._process.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Chromium opened no DevTools port in {self.timeout} s:\n{self._log_tail()}"
                )
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.load(answer) if t["type"] == "page"]
        self._socket = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
        )

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self._socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._note(message)

    def _note(self, event: dict) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(details.get("exception", {}).get("description") or details["text"])
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.console_errors.append(" ".join(filter(None, (entry["text"], entry.get("url")))))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}\n-> {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, done, what: str, timeout: float | None = None):
        """Evaluate ``expression`` until ``done(value)``; on time-out fail with the last value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not reached in {timeout or self.timeout} s; the page "
                    f"shows {value!r}; page exceptions: {self.exceptions[-3:]}; "
                    f"console errors: {self.console_errors[-5:]}"
                )
            time.sleep(0.1)

    def click(self, x: float, y: float) -> None:
        """A left click at viewport point (x, y): whatever is drawn there receives it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def move_mouse(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
