"""Offline stand-ins for the cloud, on 127.0.0.1: a real STAC API (``rustac serve``, from PyPI,
in-memory backend) and a static file server that answers HTTP range requests and counts the
bytes it sends, so a test can tell a windowed COG read from a whole-file download."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import free_port, stop_process

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeFileServer:
    """Serves ``root`` over HTTP/1.1 with single ``Range`` requests (206). ``sent[name]`` counts
    body bytes sent per file and ``requests[name]`` the GETs, so tests can compare with file sizes.
    A POST is answered as a GET (a static file can then play a STAC API's ``/search``); with
    ``refuse_from``, a range starting at or past that byte is answered 403 (a token that expired
    after the header was read); ``redirects`` maps a name to the URL a 302 sends its GETs to."""

    def __init__(
        self, root: Path, refuse_from: int | None = None, redirects: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.refuse_from = refuse_from
        self.redirects = redirects or {}
        self.sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                name = self.path.split("?", 1)[0].lstrip("/")
                if name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    with server.lock:
                        server.requests[name] += 1
                    return
                path = (server.root / name).resolve()
                if server.root.resolve() not in path.parents or not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                header = self.headers.get("Range")
                if header:
                    match = _RANGE.match(header.strip())
                    if not match:  # multi-range or malformed: refuse rather than send everything
                        self.send_error(416)
                        return
                    first, last = match.groups()
                    if first:
                        start, end = int(first), min(int(last) if last else size - 1, size - 1)
                    else:
                        start, end = max(size - int(last), 0), size - 1
                    status = 206
                if server.refuse_from is not None and start >= server.refuse_from:
                    self.send_error(403)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if body:
                    with path.open("rb") as file:
                        file.seek(start)
                        self.wfile.write(file.read(end - start + 1))
                    with server.lock:
                        server.sent[name] += end - start + 1
                        server.requests[name] += 1

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RangeFileServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (a host that hangs); every connection
    is closed when the context ends, so a client stuck on it is released then."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():  # bounded: ends with the context
            try:
                self.accepted.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self.sock.close()


def rustac_executable() -> str:
    """`rustac` next to this interpreter (the venv), else on PATH; `make test` installs it."""
    beside = Path(sys.executable).parent / "rustac"
    found = str(beside) if beside.exists() else shutil.which("rustac")
    if not found:
        raise RuntimeError("rustac not installed: run `make test` (the test extra installs it from PyPI).")
    return found


@contextmanager
def stac_api(items: list[dict], folder: Path, timeout: float = 30) -> Iterator[str]:
    """``rustac serve`` with ``items`` (collections created from their ``collection`` field) on a
    free local port; yields the API's root URL; the process is stopped by its PID afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    items_file = folder / "items.json"
    items_file.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    port = free_port()
    log = folder / "rustac.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                rustac_executable(),
                "serve",
                str(items_file),
                "--create-collections",
                "--addr",
                f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"rustac serve exited with {process.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/collections", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rustac serve not answering on {url} after {timeout}s") from None
                time.sleep(0.2)
        yield url
    finally:
        stop_process(process)
