"""The run lock on a data root in Azure storage (src/landuse_kedro/run_lock.py, issue 28): a blob lease
on ``<prefix>/.run.lock``, against a real Azurite. A second run is refused naming the holder, or waits;
a renewed lease outlives its duration, a SIGKILLed holder's expires and is taken over with a warning;
a release lets the next run in at once; each prefix is its own lock; no message carries the key."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from kedro.config import MissingConfigException

from landuse_kedro.run_lock import BlobRunLock, RunLock, RunLockedError, RunLockHooks, blob_location, lock_for
from landuse_kedro.storage import StorageConfigError
from tests.environments.conftest import CONTAINER, SESSION_KEY, connection_string
from tests.helpers import PROJECT_ROOT, free_port, stop_process

HOLDER = """
import os, sys
from landuse_kedro.run_lock import BlobRunLock
settings = {"stale_s": float(sys.argv[2]), "heartbeat_s": 5}
lock = BlobRunLock(sys.argv[1], ["holder"], settings, {"connection_string": os.environ["LOCK_TEST_CONN"]})
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def root() -> str:
    return f"abfs://{CONTAINER}/lock-tests/{uuid.uuid4().hex[:10]}"


def lock(data_root: str, azurite: str, **settings) -> BlobRunLock:
    return BlobRunLock(
        data_root, ["test"], {"stale_s": 15, "heartbeat_s": 5, **settings}, {"connection_string": azurite}
    )


def blob(data_root: str, azurite: str):
    container, name = blob_location(data_root)
    return ContainerClient.from_connection_string(azurite, container).get_blob_client(name)


def lease_state(data_root: str, azurite: str) -> str | None:
    client = blob(data_root, azurite)
    return client.get_blob_properties().lease.state if client.exists() else None


def record(data_root: str, azurite: str) -> dict:
    return json.loads(blob(data_root, azurite).download_blob().readall())


def hold_in_subprocess(data_root: str, azurite: str, log: Path) -> subprocess.Popen:
    """A process holding the lock (lease 15 s, renewed every 5 s) until its stdin closes."""
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, data_root, "15"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
            env={**os.environ, "LOCK_TEST_CONN": azurite},
        )
    ready, _, _ = select.select([process.stdout], [], [], 60)
    if not ready or process.stdout.readline().strip() != "held":
        stop_process(process)
        raise AssertionError(f"the holder never took the lock: {log.read_text()[-2000:]}")
    return process


def test_a_second_run_is_refused_at_once_naming_the_holder(azurite, tmp_path, caplog):
    data_root = root()
    holder = hold_in_subprocess(data_root, azurite, tmp_path / "holder.log")
    try:
        assert lease_state(data_root, azurite) == "leased"
        assert record(data_root, azurite)["pid"] == holder.pid
        started = time.monotonic()
        with pytest.raises(RunLockedError) as refused:
            lock(data_root, azurite, wait_s=0).acquire()
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert f"Another run is writing to {data_root}: " in message and f"pid {holder.pid}" in message
        assert "running holder since" in message and "stops before writing anything" in message
        assert SESSION_KEY not in message + caplog.text
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        stop_process(holder)
    assert lease_state(data_root, azurite) is None  # released: the blob is gone


def test_a_renewed_lease_outlives_its_duration_and_a_killed_holders_is_taken_over(azurite, tmp_path, caplog):
    data_root = root()
    holder = hold_in_subprocess(data_root, azurite, tmp_path / "holder.log")
    try:
        time.sleep(20)  # longer than the 15 s lease: only the heartbeat's renewals keep it
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            lock(data_root, azurite, wait_s=0).acquire()
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        stop_process(holder)
    assert lease_state(data_root, azurite) == "leased"  # a killed run's lease lasts until it expires
    caplog.set_level(logging.WARNING, logger="landuse_kedro.run_lock")
    after = lock(data_root, azurite, wait_s=60)
    after.acquire()
    try:
        assert record(data_root, azurite)["token"] == after.token
        assert lease_state(data_root, azurite) == "leased"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("Waiting up to 60 s" in w and f"pid {holder.pid}" in w for w in warnings), warnings
        took_over = [w for w in warnings if w.startswith("Took over the run lock")]
        waiting = next(i for i, w in enumerate(warnings) if w.startswith("Waiting up to 60 s"))
        assert waiting < warnings.index(took_over[0])  # it waited for the live lease, then took it over
        assert (
            len(took_over) == 1
            and f"pid {holder.pid}" in took_over[0]
            and "lease of 15 s expired" in took_over[0]
        )
    finally:
        after.release()
    assert lease_state(data_root, azurite) is None


def test_a_waiting_run_gets_the_lock_once_the_holder_releases(azurite, caplog):
    data_root = root()
    first = lock(data_root, azurite)
    first.acquire()
    order: list[str] = []

    def release_first() -> None:
        order.append("first releasing")
        first.release()

    releaser = threading.Timer(2, release_first)
    caplog.set_level(logging.WARNING, logger="landuse_kedro.run_lock")
    second = lock(data_root, azurite, wait_s=30)
    releaser.start()
    try:
        second.acquire()
        order.append("second acquired")
        assert order == [
            "first releasing",
            "second acquired",
        ]  # it got the lock only once the first gave it back
        assert record(data_root, azurite)["token"] == second.token
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith(
            f"Waiting up to 30 s for the run writing to {data_root}"
        )
    finally:
        releaser.join()
        second.release()
    assert lease_state(data_root, azurite) is None


def test_release_lets_the_next_run_in_at_once(azurite, caplog):
    data_root = root()
    first = lock(data_root, azurite)
    first.acquire()
    assert lease_state(data_root, azurite) == "leased"
    assert record(data_root, azurite)["token"] == first.token
    first.release()
    first.release()  # again (atexit): nothing
    assert lease_state(data_root, azurite) is None
    caplog.set_level(logging.WARNING, logger="landuse_kedro.run_lock")
    second = lock(data_root, azurite, wait_s=0)
    started = time.monotonic()
    second.acquire()
    try:
        assert time.monotonic() - started < 3
        assert lease_state(data_root, azurite) == "leased"
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        second.release()


def test_each_prefix_is_its_own_lock(azurite):
    base = root()
    one, two = lock(f"{base}/one", azurite, wait_s=0), lock(f"{base}/two", azurite, wait_s=0)
    one.acquire()
    try:
        two.acquire()
        try:
            assert lease_state(f"{base}/one", azurite) == lease_state(f"{base}/two", azurite) == "leased"
            with pytest.raises(RunLockedError):
                lock(f"{base}/two", azurite, wait_s=0).acquire()
        finally:
            two.release()
    finally:
        one.release()


def test_lease_and_heartbeat_come_from_the_settings_within_azures_limits():
    def made(**settings):
        return BlobRunLock("abfs://c/p", [], settings, {})

    assert (made().lease_s, made().heartbeat_s) == (60, 10)  # defaults: stale_s 120, heartbeat_s 10
    assert (made(stale_s=5, heartbeat_s=30).lease_s, made(stale_s=5, heartbeat_s=30).heartbeat_s) == (15, 5)
    assert (made(stale_s=40, heartbeat_s=2).lease_s, made(stale_s=40, heartbeat_s=2).heartbeat_s) == (40, 2)
    assert blob_location("abfss://landuse@acct.dfs.core.windows.net/a/b/") == ("landuse", "a/b/.run.lock")
    assert blob_location("abfs://landuse") == ("landuse", ".run.lock")


def test_unreachable_storage_is_a_storage_error_without_the_key():
    dead = connection_string(free_port())
    data_root = root()
    with pytest.raises(StorageConfigError) as error:
        BlobRunLock(data_root, [], {}, {"connection_string": dead}).acquire()
    assert "Could not take the run lock" in str(error.value) and data_root in str(error.value)
    assert SESSION_KEY not in str(error.value) and error.value.__cause__ is None


class Loader(dict):
    def __getitem__(self, key):
        if key not in self:
            raise MissingConfigException(f"no {key}")
        return dict.__getitem__(self, key)


class Context:
    def __init__(self, data_root: str, credentials: dict | None, project_path: Path) -> None:
        self.project_path = project_path
        self.config_loader = Loader(globals={"data_root": data_root})
        if credentials is not None:
            self.config_loader["credentials"] = {"storage": credentials}


class Catalog:
    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def __contains__(self, name: str) -> bool:
        return name == "params:run_lock"

    def load(self, name: str) -> dict:
        return self.settings


def test_the_hooks_hold_a_blob_lease_for_an_azure_data_root(azurite, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data_root = (
        f"abfss://{CONTAINER}@devstoreaccount1.dfs.core.windows.net/lock-tests/{uuid.uuid4().hex[:10]}"
    )
    run = {"pipeline_names": ["data_preparation"]}
    catalog = Catalog({"wait_s": 0, "stale_s": 15, "heartbeat_s": 5})
    first, second = RunLockHooks(), RunLockHooks()
    for hooks in (first, second):
        hooks.after_context_created(Context(data_root, {"connection_string": azurite}, tmp_path))
    first.before_pipeline_run(run, catalog)
    try:
        assert isinstance(first._lock, BlobRunLock)
        assert lease_state(data_root, azurite) == "leased"
        assert record(data_root, azurite)["pipelines"] == ["data_preparation"]
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}, running data_preparation"):
            second.before_pipeline_run(run, catalog)
    finally:
        first.on_pipeline_error()
    assert lease_state(data_root, azurite) is None
    second.before_pipeline_run(run, catalog)
    second.after_pipeline_run()
    assert lease_state(data_root, azurite) is None
    assert SESSION_KEY not in caplog.text and azurite not in caplog.text


def test_the_lock_kind_follows_the_data_root(tmp_path, caplog):
    assert isinstance(lock_for("abfs://c/p", tmp_path, [], {}), BlobRunLock)
    assert isinstance(lock_for("az://c/p", tmp_path, [], {}), BlobRunLock)
    local = lock_for("data", tmp_path, [], {})
    assert isinstance(local, RunLock) and local.path == tmp_path / "data" / ".run.lock"
    assert lock_for("s3://bucket/p", tmp_path, [], {}) is None
    hooks = RunLockHooks()
    hooks.after_context_created(Context("abfs://c/p", None, tmp_path))  # no credentials config
    assert hooks._credentials == {}
    hooks.after_context_created(Context("gs://bucket/p", None, tmp_path))
    caplog.set_level(logging.WARNING, logger="landuse_kedro.run_lock")
    hooks.before_pipeline_run({"pipeline_name": None}, Catalog({}))
    assert hooks._lock is None and "gs://bucket/p is on an object store without a run lock" in caplog.text
