"""One writing run at a time on a data root: ``<data_root>/.run.lock``.

Two runs writing the same folders (mapping two regions at once, a re-run started while one runs)
would each replace the other's outputs mid-write. A pipeline run holds this lock from
``before_pipeline_run`` to its end; a second run waits ``run_lock.wait_s`` for it (0: stops at once)
and then stops with a message naming the holder. Commands that run no pipeline (``kedro viz``,
``kedro catalog``) never take it, so never wait.

The lock file holds the holder's user, host, pid, pipelines and start time; its modification time is
the heartbeat, touched every ``run_lock.heartbeat_s`` by a thread of the holder. A lock whose process is
gone (same host) or whose heartbeat is older than ``run_lock.stale_s`` is taken over, with a warning: a
run killed with SIGKILL never blocks the next one. Created with ``O_EXCL``, taken over by a rename, so
two runs cannot both get it. Only a local data root is locked: on object storage (``abfss://``) the
run warns that it is not (a blob lease would be needed).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from landuse_kedro.storage import is_remote

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
DEFAULTS = {"wait_s": 0.0, "heartbeat_s": 10.0, "stale_s": 120.0}


class RunLockedError(RuntimeError):
    """Another run holds the data root's lock."""


def describe(holder: dict[str, Any]) -> str:
    return (
        f"{holder.get('user', '?')} on {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"running {','.join(holder.get('pipelines') or ['?'])} since {holder.get('started', '?')}"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """The lock's content (None while it is being written) and age in seconds; None if no lock."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text), age
    except ValueError:
        return None, age


def stale_reason(holder: dict[str, Any] | None, age: float, stale_s: float) -> str | None:
    """Why a lock may be taken over (its process is gone, or its heartbeat stopped), else None."""
    if holder and holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0))):
        return f"its process {holder.get('pid')} is gone"
    if age > stale_s:
        return f"no heartbeat for {age:.0f} s (run_lock.stale_s: {stale_s:g})"
    return None


class RunLock:
    """The lock file, held by this process until :meth:`release`."""

    def __init__(self, path: Path, pipelines: list[str], settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = {**DEFAULTS, **settings}
        self.token = uuid.uuid4().hex
        self.record = {
            "token": self.token,
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pipelines": pipelines,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        """Create the lock, waiting up to ``wait_s`` for another holder; take over a stale one.

        Raises:
            RunLockedError: Another live run still holds it after ``wait_s``.
        """
        wait_s, stale_s = float(self.settings["wait_s"]), float(self.settings["stale_s"])
        deadline, said = time.monotonic() + wait_s, False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            if self._create():
                break
            found = _read(self.path)
            if found is None:
                continue  # released meanwhile
            holder, age = found
            reason = stale_reason(holder, age, stale_s)
            if reason:
                self._take_over(holder, reason)
                continue
            if holder is None and age < 5:  # being written this instant
                time.sleep(0.1)
                continue
            if time.monotonic() >= deadline:
                raise RunLockedError(
                    f"Another run is writing to {self.path.parent}: {describe(holder or {})} (lock "
                    f"{self.path}). Two runs writing the same data folder would replace each other's "
                    f"outputs, so this one stops before writing anything"
                    f"{f' after waiting {wait_s:g} s' if wait_s else ''}. Run it once that run ends, or let "
                    "it wait: --params run_lock.wait_s=<seconds> (conf/base/parameters_run_lock.yml)."
                )
            if not said:
                logger.warning(
                    "Waiting up to %g s for the run writing to %s to end: %s",
                    wait_s,
                    self.path.parent,
                    describe(holder or {}),
                )
                said = True
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()
        atexit.register(self.release)  # a hook that raised before the run started never releases it

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self.record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _take_over(self, holder: dict[str, Any] | None, reason: str) -> None:
        """Move the stale lock aside (one rename: of two runs taking over, one wins) and drop it."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another run moved it first
        moved = _read(aside)
        if moved is not None and moved[0] != holder:  # a fresh lock replaced the stale one meanwhile
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        else:
            logger.warning(
                "Took over the run lock %s of %s: %s. Its outputs were left as that run left them; "
                "leftovers of its staged writes are removed as the outputs are written again.",
                self.path,
                describe(holder or {}),
                reason,
            )
        aside.unlink()

    def _heartbeat(self) -> None:
        while not self._stop.wait(float(self.settings["heartbeat_s"])):
            if self._ours():
                with contextlib.suppress(OSError):
                    os.utime(self.path)

    def _ours(self) -> bool:
        found = _read(self.path)
        return bool(found and found[0] and found[0].get("token") == self.token)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self._ours():
            self.path.unlink(missing_ok=True)


class RunLockHooks:
    """Holds the data root's :class:`RunLock` for each pipeline run (see the module docstring).
    Registered last in settings.py, so its ``before_pipeline_run`` runs first: a refused run starts
    nothing (no MLflow run, no Spark)."""

    def __init__(self) -> None:
        self._root: str = "data"
        self._project_path = Path.cwd()
        self._lock: RunLock | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self._root = str((context.config_loader["globals"] or {}).get("data_root", "data"))
        except MissingConfigException:
            self._root = "data"
        self._project_path = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog) -> None:
        # read here, not from context.params, which would fix the parameters before ParameterHooks
        # has made the runtime ones conform
        settings = dict(catalog.load("params:run_lock") or {}) if "params:run_lock" in catalog else {}
        if is_remote(self._root):
            logger.warning(
                "The data root %s is on object storage: this run takes no run lock there, so do not "
                "start two runs writing it at once.",
                self._root.split("@")[-1],
            )
            return
        root = self._project_path / self._root.removeprefix("file://")
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        lock = RunLock(root / LOCK_NAME, list(pipelines), settings)
        lock.acquire()
        self._lock = lock

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            try:
                lock.release()
            except OSError as error:  # never hide the run's own error, never skip another hook
                logger.warning("Could not release the run lock %s: %s", lock.path, error)
