"""What tests share besides fixtures: the project and its configuration, a throw-away project copy, real
Kedro runs, a local Spark session, a standalone cluster, processes and ports. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAND_COVER = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters.yml").read_text())["land_cover"]
"""The project's own ``params:land_cover``: class order, NLCD table, 3-class view."""

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # Spark binds to loopback only


def make_project_copy(target: Path) -> Path:
    """conf/ + pyproject + empty data layers: enough for KedroSession, with its own data folder."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT_ROOT / "conf", target / "conf", dirs_exist_ok=True)
    local_creds = target / "conf" / "local" / "credentials.yml"
    if local_creds.exists():  # a developer's own secrets never reach tests
        local_creds.unlink()
    for name in ("pyproject.toml", ".telemetry"):  # .telemetry: consent false, never phone home
        shutil.copy(PROJECT_ROOT / name, target / name)
    (target / "src").mkdir(
        exist_ok=True
    )  # bootstrap_project requires source_dir; code comes from the install
    for layer in (
        "01_raw",
        "02_intermediate",
        "03_primary",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    ):
        (target / "data" / layer).mkdir(parents=True, exist_ok=True)
    return target


RUN_SPECIFIC = {"run_id", "landuse:run_id", "file:checksum"}
"""Keys whose values name the run: its id, and a STAC asset's checksum (the file's tags hold the run id)."""


def without_run_ids(value):
    """``value`` (JSON or GeoTIFF tags) without its run ids: each run names itself (issue 28), the rest
    of two runs' outputs must be equal."""
    if isinstance(value, dict):
        return {key: without_run_ids(item) for key, item in value.items() if key not in RUN_SPECIFIC}
    if isinstance(value, list):
        return [without_run_ids(item) for item in value]
    return value


def run_pipeline(
    project: Path, pipeline: str | None = None, env: str = "test", params: dict | None = None, **run_kwargs
):
    """Run a pipeline through a real KedroSession in ``project``; returns the run's outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    cwd = Path.cwd()
    os.chdir(project)  # relative data paths resolve against the project copy
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
            return session.run(pipeline_names=[pipeline] if pipeline else None, **run_kwargs)
    finally:
        os.chdir(cwd)


def registered_pipelines() -> dict:
    """The project's pipelines by name, as ``kedro run --pipelines`` finds them."""
    from kedro.framework.project import configure_project, pipelines

    configure_project("landuse_kedro")
    return dict(pipelines)


def load_catalog(project: Path, env: str = "test", params: dict | None = None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, env=env, runtime_params=params or {})
    return session.load_context().catalog


def local_spark_session():
    """A local[1] session for a test module that calls Spark nodes directly: starting one costs
    seconds, and each extra core adds a Python worker that imports its backend again (the
    pipeline tests use local[2] through SparkHooks)."""
    from landuse_kedro.spark import start_spark

    session = start_spark(
        {
            "spark.master": "local[1]",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        }
    )
    yield session
    session.stop()


def corrupt_block(path: Path, x: int, y: int) -> None:
    """Overwrite the compressed bytes of one internal block of a tiled GeoTIFF, as a bad disk or
    an interrupted copy would: GDAL then fails to read any window touching that block."""
    import rasterio

    with rasterio.open(path) as dataset:
        offset = int(dataset.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
        size = int(dataset.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)


CHAIN = ("sample_scene", "data_preparation", "training", "spark_scoring", "development_inference")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (started with start_new_session=True), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def spark_cluster(spark_home: Path, folder: Path, env: dict[str, str] | None = None):
    """A master and two 1-core workers of the Spark at ``spark_home`` on 127.0.0.1, started in the
    background: ``wait()`` blocks until both workers registered; ``state()`` is the master's JSON
    (applications, workers). Every process is stopped afterwards, whatever happened."""
    env = env or {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui_port = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"

    def start(log: str, *args: str) -> subprocess.Popen:
        with (folder / log).open("wb") as out:
            return subprocess.Popen(
                [str(spark_home / "bin" / "spark-class"), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    folder.mkdir(parents=True, exist_ok=True)
    master = ("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port))
    processes = [start("master.log", "org.apache.spark.deploy.master.Master", *master)]
    workers = [folder / f"worker{i}" for i in range(2)]
    try:
        for i, work in enumerate(workers):
            work.mkdir()
            ports = ("--port", str(free_port()), "--webui-port", str(free_port()))
            resources = ("--cores", "1", "--memory", "1g", "--work-dir", str(work))
            worker = ("--host", "127.0.0.1", *ports, *resources, url)
            processes.append(start(f"worker{i}.log", "org.apache.spark.deploy.worker.Worker", *worker))

        def state() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as answer:
                return json.load(answer)

        yield SimpleNamespace(
            url=url, workers=workers, state=state, wait=lambda: _wait_for_workers(ui_port, 2, folder)
        )
    finally:
        for process in reversed(processes):
            stop_process(process)


def _wait_for_workers(ui_port: int, expected: int, logs: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:
                if json.load(answer).get("aliveworkers", 0) >= expected:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Spark standalone cluster not up after {timeout}s; logs in {logs}")
