"""Bad storage configuration stops a run before any node, with a message that names the problem
and the environment, and never a secret (in the message, the traceback or the logs)."""

from __future__ import annotations

import base64
import logging
import os
import traceback
from pathlib import Path

import pytest

from landuse_kedro.storage import StorageConfigError, check_credentials, redact
from tests.environments.conftest import SESSION_KEY, connection_string
from tests.helpers import free_port, run_pipeline

ENV = "azurite"


def _run_failing(project: Path, caplog) -> tuple[StorageConfigError, str]:
    caplog.set_level(logging.DEBUG)  # the Azure SDK logs requests at DEBUG
    with pytest.raises(StorageConfigError) as error:
        run_pipeline(project, "data_preparation", env=ENV)
    shown = "".join(traceback.format_exception(error.value)) + caplog.text
    return error.value, shown


def test_unreachable_endpoint_fails_before_any_node(project_copy: Path, monkeypatch, caplog) -> None:
    dead = connection_string(free_port())  # nothing listens there; same secret key as Azurite's
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", dead)
    error, shown = _run_failing(project_copy, caplog)
    assert "cannot reach Azure storage" in str(error) and f"'{ENV}'" in str(error)
    assert SESSION_KEY not in shown and dead not in shown
    assert "Running node" not in caplog.text


def test_missing_container_is_named(project_copy: Path, azurite_env: str, caplog) -> None:
    globals_file = project_copy / "conf" / ENV / "globals.yml"
    globals_file.write_text(globals_file.read_text().replace("container: landuse", "container: absent"))
    error, shown = _run_failing(project_copy, caplog)
    assert "container 'absent' does not exist" in str(error)
    assert SESSION_KEY not in shown


def test_wrong_key_is_refused_without_echoing_it(project_copy: Path, azurite, monkeypatch, caplog) -> None:
    wrong_key = base64.b64encode(os.urandom(64)).decode()
    port = azurite.split("127.0.0.1:")[1].split("/")[0]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(int(port), wrong_key))
    error, shown = _run_failing(project_copy, caplog)
    assert "refused the `storage` credentials" in str(error)
    assert wrong_key not in shown


def test_missing_variable_names_variable_and_environment(project_copy: Path, caplog) -> None:
    error, _ = _run_failing(project_copy, caplog)  # the autouse fixture cleared AZURE_STORAGE_*
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(error) and f"--env {ENV}" in str(error)


def test_an_incomplete_login_says_what_is_missing() -> None:
    with pytest.raises(StorageConfigError, match="no client_secret") as error:
        check_credentials({"account_name": "acct", "tenant_id": "t", "client_id": "c"}, "hdinsight")
    assert "'hdinsight'" in str(error.value)
    check_credentials({"account_name": "acct", "account_key": "k"}, "hdinsight")  # complete


def test_redact_hides_connection_string_parts() -> None:
    conn = connection_string(1)
    text = f"failed with {conn} and key {SESSION_KEY}"
    cleaned = redact(text, {"connection_string": conn})
    assert SESSION_KEY not in cleaned and "***" in cleaned
