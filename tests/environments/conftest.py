"""Azurite (the Azure Storage emulator, npm) for the environment tests: one blob service per test
session on a free local port, its data in a temporary folder, always stopped at the end."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from tests.helpers import PROJECT_ROOT, free_port, stop_process

AZURITE_BIN = PROJECT_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"  # conf/azurite/globals.yml azure.account
# Not Azurite's published key: a fresh random one per session (AZURITE_ACCOUNTS), so tests can
# assert that a real secret never reaches logs or error messages.
SESSION_KEY = base64.b64encode(os.urandom(64)).decode()
CONTAINER = "landuse"  # conf/azurite/globals.yml azure.container
START_TIMEOUT_S = 30


def connection_string(port: int, key: str = SESSION_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def _wait_until_answering(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"Azurite did not answer on port {port} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[str]:
    """The connection string of a running Azurite blob service holding an empty ``landuse``
    container. `make test` installs Azurite into .tools/; without it these tests fail, loudly."""
    executable = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite-blob")
    if executable is None:
        pytest.fail(f"Azurite not installed: run `make test` (it installs {AZURITE_BIN}).")
    workdir = tmp_path_factory.mktemp("azurite")
    port = free_port()
    log = workdir / "azurite.log"
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            [
                str(executable),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(workdir / "data"),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{SESSION_KEY}"},
            start_new_session=True,
        )
    try:
        _wait_until_answering(process, port, log)
        conn = connection_string(port)
        BlobServiceClient.from_connection_string(conn).create_container(CONTAINER)
        yield conn
    finally:
        stop_process(process)


@pytest.fixture
def azurite_env(azurite: str, monkeypatch) -> str:
    """Azurite's connection string in the variable conf/azurite/credentials.yml reads."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    return azurite


@pytest.fixture(autouse=True)
def _no_ambient_azure_credentials(monkeypatch) -> None:
    """adlfs falls back to AZURE_STORAGE_* variables: a developer's own must not leak in."""
    for name in list(os.environ):
        if name.startswith(("AZURE_STORAGE_", "AZURE_CLIENT_", "AZURE_TENANT_")):
            monkeypatch.delenv(name)
