"""What every run lock shares (:mod:`landuse_kedro.run_lock` tells how the locks work): the holder's
record, waiting for a live holder and refusing after ``wait_s``, the heartbeat thread, and the error
a refused run stops with.
"""

from __future__ import annotations

import atexit
import getpass
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

LOGGER_NAME = "landuse_kedro.run_lock"  # one logger for every part of the lock, as logging config names it
logger = logging.getLogger(LOGGER_NAME)

LOCK_NAME = ".run.lock"
DEFAULTS = {"wait_s": 0.0, "heartbeat_s": 10.0, "stale_s": 120.0}
BLOB_TIMEOUT_S = 10.0  # each blob request's; a heartbeat's last beat ends within two of them


class RunLockedError(RuntimeError):
    """Another run holds the data root's lock."""


def describe(holder: dict[str, Any]) -> str:
    return (
        f"{holder.get('user', '?')} on {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"running {','.join(holder.get('pipelines') or ['?'])} since {holder.get('started', '?')}"
        + (f" (run id {holder['run_id']}: its outputs carry it)" if holder.get("run_id") else "")
    )


class BaseRunLock:
    """What both locks share: the settings, the holder's record, the waiting and refusing messages,
    the heartbeat thread. Subclasses take the lock in :meth:`acquire` and give it back in
    :meth:`release`, which never raises (it warns)."""

    def __init__(self, pipelines: list[str], settings: dict[str, Any]) -> None:
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

    def _wait_a_moment(
        self, holder: dict[str, Any] | None, wait_s: float, deadline: float, said: bool
    ) -> bool:
        """One step of waiting for a live holder: refuse once ``deadline`` has passed, say once that
        this run waits, sleep up to a second. Returns whether the waiting was said."""
        if time.monotonic() >= deadline:
            raise self._refused(holder, wait_s)
        if not said:
            self._say_waiting(holder, wait_s)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return True

    @property
    def root(self) -> str:
        """The data root, as messages name it."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        """The lock itself, as messages name it."""
        raise NotImplementedError

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def _refused(self, holder: dict[str, Any] | None, wait_s: float) -> RunLockedError:
        return RunLockedError(
            f"Another run is writing to {self.root}: {describe(holder or {})} (lock "
            f"{self.location}). Two runs writing the same data folder would replace each other's "
            f"outputs, so this one stops before writing anything"
            f"{f' after waiting {wait_s:g} s' if wait_s else ''}. Run it once that run ends, or let "
            "it wait: --params run_lock.wait_s=<seconds> (conf/base/parameters_run_lock.yml)."
        )

    def _say_waiting(self, holder: dict[str, Any] | None, wait_s: float) -> None:
        logger.warning(
            "Waiting up to %g s for the run writing to %s to end: %s",
            wait_s,
            self.root,
            describe(holder or {}),
        )

    def _start_heartbeat(self, interval_s: float) -> None:
        self._beat = threading.Thread(
            target=self._heartbeat, args=(interval_s,), name="run-lock-heartbeat", daemon=True
        )
        self._beat.start()
        atexit.register(self.release)  # a hook that raised before the run started never releases it

    def _heartbeat(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._beat_once()

    def _beat_once(self) -> None:
        raise NotImplementedError

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=BLOB_TIMEOUT_S * 2 + 5)
