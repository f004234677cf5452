"""One writing run at a time on a data root: ``<data_root>/.run.lock``.

Two runs writing the same folders (mapping two regions at once, a re-run started while one runs)
would each replace the other's outputs mid-write. A pipeline run holds this lock from
``before_pipeline_run`` to its end; a second run waits ``run_lock.wait_s`` for it (0: stops at once)
and then stops with a message naming the holder. Commands that run no pipeline (``kedro viz``,
``kedro catalog``) never take it, so never wait.

Both locks hold the holder's record (user, host, pid, pipelines, start time, a token) as JSON and are
taken and given back the same way (:meth:`acquire`, :meth:`release`, a heartbeat thread between):

- :class:`RunLock`, a local data root: the file ``<data_root>/.run.lock``, created with ``O_EXCL``. Its
  modification time is the heartbeat, touched every ``run_lock.heartbeat_s``. A lock whose process is
  gone (same host) or whose heartbeat is older than ``run_lock.stale_s`` is taken over, with a warning:
  a run killed with SIGKILL never blocks the next one. Taken over by a rename, so two runs cannot both
  get it. Released by deleting the file.
- :class:`BlobRunLock`, a data root in Azure storage (``abfs://``, ``abfss://``, ``az://``): the blob
  ``<prefix>/.run.lock`` in the data root's container, held through a blob lease (Azure grants a
  lease to one client at a time), with the run's ``storage`` credentials. The lease lasts
  ``min(60, max(15, stale_s))`` seconds (Azure allows 15 to 60, or infinite, which a killed run would
  never give back) and the heartbeat renews it every ``heartbeat_s``, at most a third of that. A run
  killed with SIGKILL stops renewing: its lease expires and the next run takes it over, with a
  warning naming it (its record is still in the blob). Released by deleting the blob under the lease,
  so a released lock leaves nothing behind and a blob holding a record means its run never released.

Other object stores (``s3://``, ``gs://``) are not locked: the run warns that it is not.

Here: :class:`RunLock`, :func:`lock_for` and the hooks; what both locks share is in
:mod:`landuse_kedro.run_lock_base`, the blob lease in :mod:`landuse_kedro.run_lock_blob`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.io.core import get_protocol_and_path

from landuse_kedro.run_lock_base import LOCK_NAME, BaseRunLock, RunLockedError, describe
from landuse_kedro.run_lock_blob import BlobRunLock, blob_location
from landuse_kedro.storage import AZURE_PROTOCOLS

__all__ = [
    "BlobRunLock",
    "RunLock",
    "RunLockHooks",
    "RunLockedError",
    "blob_location",
    "describe",
    "lock_for",
    "stale_reason",
]

logger = logging.getLogger(__name__)


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


class RunLock(BaseRunLock):
    """The lock file of a local data root, held by this process until :meth:`release`."""

    def __init__(self, path: Path, pipelines: list[str], settings: dict[str, Any]) -> None:
        super().__init__(pipelines, settings)
        self.path = path

    @property
    def root(self) -> str:
        return str(self.path.parent)

    @property
    def location(self) -> str:
        return str(self.path)

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
            said = self._wait_a_moment(holder, wait_s, deadline, said)
        self._start_heartbeat(float(self.settings["heartbeat_s"]))

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

    def _beat_once(self) -> None:
        if self._ours():
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _ours(self) -> bool:
        found = _read(self.path)
        return bool(found and found[0] and found[0].get("token") == self.token)

    def release(self) -> None:
        self._stop_heartbeat()
        try:
            if self._ours():
                self.path.unlink(missing_ok=True)
        except OSError as error:  # never hide the run's own error, never skip another hook
            logger.warning("Could not release the run lock %s: %s", self.path, error)


def lock_for(
    data_root: str,
    project_path: Path,
    pipelines: list[str],
    settings: dict[str, Any],
    credentials: Mapping[str, Any] | None = None,
) -> RunLock | BlobRunLock | None:
    """The lock of ``data_root``: a :class:`BlobRunLock` in Azure storage, a :class:`RunLock` on a
    local disk (relative to ``project_path``), None on another object store (not locked)."""
    protocol = get_protocol_and_path(str(data_root))[0]
    if protocol in AZURE_PROTOCOLS:
        return BlobRunLock(data_root, pipelines, settings, credentials)
    if protocol != "file":
        return None
    return RunLock(project_path / str(data_root).removeprefix("file://") / LOCK_NAME, pipelines, settings)


class RunLockHooks:
    """Holds the data root's lock (:class:`RunLock` or :class:`BlobRunLock`) for each pipeline run
    (see the module docstring). Registered last in settings.py, so its ``before_pipeline_run`` runs
    first: a refused run starts nothing (no MLflow run, no Spark)."""

    def __init__(self) -> None:
        self._root: str = "data"
        self._project_path = Path.cwd()
        self._credentials: dict[str, Any] = {}
        self._lock: RunLock | BlobRunLock | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        try:
            self._root = str((loader["globals"] or {}).get("data_root", "data"))
        except MissingConfigException:
            self._root = "data"
        self._project_path = Path(context.project_path)
        self._credentials = {}
        if get_protocol_and_path(self._root)[0] in AZURE_PROTOCOLS:
            # as StorageHooks reads them; a missing or broken config is StorageHooks' to report
            with contextlib.suppress(Exception):
                self._credentials = dict((loader["credentials"] or {}).get("storage") or {})

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog) -> None:
        # read here, not from context.params, which would fix the parameters before ParameterHooks
        # has made the runtime ones conform
        settings = dict(catalog.load("params:run_lock") or {}) if "params:run_lock" in catalog else {}
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        lock = lock_for(self._root, self._project_path, list(pipelines), settings, self._credentials)
        if lock is None:
            logger.warning(
                "The data root %s is on an object store without a run lock: this run takes none, so "
                "do not start two runs writing it at once.",
                self._root.split("?", 1)[0],
            )
            return
        lock.record["run_id"] = str(run_params.get("run_id"))  # the id its outputs carry
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
            except Exception as error:  # noqa: BLE001 - never hide the run's own error, never skip another hook
                logger.warning("Could not release the run lock %s: %s", lock.location, error)
