"""The run lock on the data root (src/landuse_kedro/run_lock.py, issue 28): real `kedro run` processes
on one project copy. A second writing run stops at once naming the holder, or waits when told to; a
lock left by a run killed with SIGKILL is taken over with a warning; the outputs afterwards are one
complete run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import make_project_copy, run_pipeline, stop_process

LOCK = Path("data") / ".run.lock"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project_copy(tmp_path_factory.mktemp("run_lock") / "project")
    run_pipeline(project, "sample_scene")
    return project


def kedro_run(project: Path, log: Path, *params: str, pipeline: str = "data_preparation") -> subprocess.Popen:
    """``kedro run`` of ``pipeline`` in ``project`` as its own process group, output to ``log``."""
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", pipeline, "--env", "test"]
    if params:
        command += ["--params", ",".join(params)]
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            env={**os.environ, "COLUMNS": "1000"},  # rich wraps log lines at the terminal's width
        )


def wait_for_lock(project: Path, process: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the first run ended before it was seen holding the lock"
        try:
            return json.loads((project / LOCK).read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    raise AssertionError("the first run never took the lock")


def text(log: Path) -> str:
    return " ".join(log.read_text().split())  # rich wraps long lines


def assert_one_complete_run(project: Path) -> None:
    """The tile folder holds exactly the manifest's tiles, file by file, and no staged leftovers."""
    root = project / "data" / "05_model_input"
    manifest = pd.read_parquet(root / "tile_manifest.parquet")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
    listed = sorted(f"{partition}.png" for partition in manifest["partition"])
    assert files and files == listed
    leftovers = [
        p.name for p in project.joinpath("data").rglob("*") if ".staging-" in p.name or ".previous-" in p.name
    ]
    assert leftovers == []
    assert not (project / LOCK).exists()  # released at the end


def test_a_second_run_stops_at_once_or_waits_as_configured(project, tmp_path):
    first = kedro_run(project, tmp_path / "first.log")
    try:
        holder = wait_for_lock(project, first)
        assert holder["pid"] == first.pid and holder["pipelines"] == ["data_preparation"]
        time.sleep(1)
        refused = kedro_run(project, tmp_path / "refused.log")
        assert refused.wait(timeout=120) != 0
        message = text(tmp_path / "refused.log")
        assert f"Another run is writing to {project / 'data'}" in message and f"pid {first.pid}" in message
        assert "stops before writing anything" in message
        waiting = kedro_run(project, tmp_path / "waiting.log", "run_lock.wait_s=600")
        assert first.wait(timeout=600) == 0, text(tmp_path / "first.log")[-3000:]
        assert waiting.wait(timeout=600) == 0, text(tmp_path / "waiting.log")[-3000:]
    finally:
        for process in (first, locals().get("refused"), locals().get("waiting")):
            if process is not None and process.poll() is None:
                stop_process(process)
    assert "Waiting up to 600 s for the run writing to" in text(tmp_path / "waiting.log")
    assert "Pipeline execution completed successfully" in text(tmp_path / "waiting.log")
    assert_one_complete_run(project)


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(project, tmp_path):
    killed = kedro_run(project, tmp_path / "killed.log")
    try:
        holder = wait_for_lock(project, killed)
        time.sleep(1)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            stop_process(killed)
    assert json.loads((project / LOCK).read_text()) == holder  # the killed run left its lock
    after = kedro_run(project, tmp_path / "after.log")
    assert after.wait(timeout=600) == 0, text(tmp_path / "after.log")[-3000:]
    message = text(tmp_path / "after.log")
    assert "Took over the run lock" in message and f"its process {killed.pid} is gone" in message
    assert_one_complete_run(project)
