"""docs/deployment.md, followed as its reader would (issue 16): `kedro package` in a copy of the
checkout, the wheel installed into a fresh virtual environment, the configuration unpacked, and
the guide's own spark-submit command, read from the guide, run against a Spark 3.5 standalone
cluster (a master and two workers). The pyspark 3.5 of `make test-spark3`'s environment plays the
cluster's Spark, as HDInsight's own Spark does: the wheel's environment has no pyspark of its own.

The run's environment is the local run's `test` environment with two changes, the master URL and
the data root. spark_scoring and development_inference must write what the local run wrote
(`tiny_chain_project`: env `test`, pyspark 4, code from the checkout), and every Python process of
the run, the driver and each executor, must report that it imported landuse_kedro from the wheel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image

from tests.deployment.test_deployment_guide import ENV_NAME, guide_block, submit_command
from tests.helpers import PROJECT_ROOT, spark_cluster, without_run_ids

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SPARK3 = PROJECT_ROOT / ".tools" / "pyspark35"  # Makefile: $(SPARK3), made by `make test`
UV_CACHE = PROJECT_ROOT / ".tools" / "uv-cache"
# The two pipelines' outputs, as in the local run's data folder (a Spark table counts as one).
OWN_OUTPUTS = re.compile(r"^(07_model_output/|08_reporting/(scoring_|regions/))")
LAYER_PREFIX = re.compile(r"^.*?/(?=0[1-8]_[a-z_]+/)")  # what precedes a data layer: the data root
PYTHON_OR_SPARK = re.compile(r"^(PYTHON|PYSPARK_|SPARK_|VIRTUAL_ENV|CONDA_|UV_)")


def _bash(script: str, cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(f"$ {script}\n".encode())
        out.flush()
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    assert done.returncode == 0, f"failed ({done.returncode}): {script}\nlog {log}:\n{tail}"


def _clean_env(path: list[Path], **variables: str) -> dict[str, str]:
    """A new user's shell: this process's environment (network, certificates, Java) without its
    Python and Spark settings (PYSPARK_PYTHON, PYTHONPATH, VIRTUAL_ENV name the checkout's .venv)
    and without the checkout on PATH; ``path`` first."""
    env = {k: v for k, v in os.environ.items() if not PYTHON_OR_SPARK.match(k)}
    checkout = PROJECT_ROOT.resolve()
    system = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not Path(d).resolve().is_relative_to(checkout)
    ]
    return {
        **env,
        "PATH": os.pathsep.join([*map(str, path), *system]),
        "KEDRO_DISABLE_TELEMETRY": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "SPARK_LOCAL_IP": "127.0.0.1",
        **variables,
    }


def _spark3_home() -> Path:
    python = SPARK3 / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"{SPARK3} is missing: `make test` builds it "
            f"(or `make {SPARK3.relative_to(PROJECT_ROOT)}/.installed`)"
        )
    found = subprocess.run(
        [str(python), "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env([]),
    )
    return Path(found.stdout.strip())


def _checkout_copy(target: Path) -> Path:
    """What `kedro package` reads from a checkout: the project file, its README, code and conf."""
    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, target / name)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(PROJECT_ROOT / "src", target / "src", ignore=junk)
    shutil.copytree(PROJECT_ROOT / "conf", target / "conf", ignore=junk)
    for secret in (target / "conf" / "local").glob("credentials*"):  # a developer's own, never copied
        secret.unlink()
    return target


def _cluster_environment(conf: Path, master: str, data_root: Path) -> None:
    """conf/<ENV_NAME>: the `test` environment with its master URL and data root changed (step 1
    of the guide, done before packaging, so the tarball carries it)."""
    shutil.copytree(conf / "test", conf / ENV_NAME)
    spark = conf / ENV_NAME / "spark.yml"
    text = spark.read_text()
    assert text.count("spark.master: local[2]\n") == 1, "conf/test/spark.yml's master moved"
    spark.write_text(text.replace("spark.master: local[2]\n", f"spark.master: {master}\n"))
    assert not (conf / ENV_NAME / "globals.yml").exists()
    (conf / ENV_NAME / "globals.yml").write_text(f"data_root: {data_root}\n")


def _inputs(local: Path, data_root: Path) -> None:
    """The local run's inputs of the two pipelines: raw scenes, the sample scene's truth (the reference
    sample's labels), validation tiles, scoring model."""
    raw = ("01_raw/naip", "01_raw/nlcd", "01_raw/sample_truth")
    for folder in (*raw, "05_model_input/validation", "06_models/scoring_model.onnx"):
        shutil.copytree(local / folder, data_root / folder)


def _dependencies_only(env_path: Path, wheel: Path, log: Path) -> None:
    """A new virtual environment holding the wheel's dependencies and not the wheel, as a node is
    before the last line of step 3's script action. uv installs them from its cache in .tools/
    (pip would download about 2 GB on every run: 3 minutes here); the guide's own pip command then
    installs the wheel."""
    uv = str(Path(sys.executable).with_name("uv"))
    env = {**_clean_env([]), "UV_CACHE_DIR": str(UV_CACHE)}
    python = str(env_path / "bin" / "python")
    base = getattr(sys, "_base_executable", sys.executable)
    for args in (
        ["venv", "--seed", "--python", base, str(env_path)],
        ["pip", "install", "--python", python, str(wheel)],
        ["pip", "uninstall", "--python", python, "landuse_kedro"],
    ):
        _bash(" ".join(map(_quote, [uv, *args])), cwd=log.parent, env=env, log=log)


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


AUDIT = '''"""Written by tests/deployment/test_packaged_cluster.py: every process of this environment
records where each landuse_kedro module it imports comes from (one JSON line per module)."""
import json, os, sys


class LanduseImportAudit:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] != "landuse_kedro":
            return None
        for finder in sys.meta_path:  # the finders that would have answered: the answer is theirs
            if finder is LanduseImportAudit or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                record = {"module": name, "origin": spec.origin, "cwd": os.getcwd(),
                          "python": sys.executable, "pid": os.getpid()}
                with open(LOG, "a") as log:
                    log.write(json.dumps(record) + "\\n")
                return spec
        return None


sys.meta_path.insert(0, LanduseImportAudit)
'''


def _install_import_audit(env_path: Path, log: Path) -> None:
    """An import hook in the fresh environment (a .pth line runs it at every interpreter start):
    the driver and the executors' Python workers run this environment's interpreter, so each
    reports the file every landuse_kedro module came from."""
    site = subprocess.run(
        [str(env_path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env([]),
    ).stdout.strip()
    (Path(site) / "landuse_import_audit.py").write_text(f"LOG = {str(log)!r}\n{AUDIT}")
    (Path(site) / "landuse_import_audit.pth").write_text("import landuse_import_audit\n")


@pytest.fixture(scope="module")
def packaged_run(tiny_chain_project: Path, tmp_path_factory) -> SimpleNamespace:
    spark_home = _spark3_home()
    root = tmp_path_factory.mktemp("deployment")
    env_path, data_root, head = root / "env", root / "storage", root / "head"
    node = _clean_env([spark_home / "bin"], SPARK_HOME=str(spark_home), ENV=str(env_path))
    with spark_cluster(spark_home, root / "cluster", node) as cluster:  # boots while the wheel is built
        checkout = _checkout_copy(root / "checkout")
        _cluster_environment(checkout / "conf", cluster.url, data_root)
        _inputs(tiny_chain_project / "data", data_root)
        _bash(
            guide_block("build"),
            cwd=checkout,
            log=root / "build.log",
            env=_clean_env([Path(sys.executable).parent]),
        )
        (wheel,) = checkout.glob("dist/landuse_kedro-*-py3-none-any.whl")
        _dependencies_only(env_path, wheel, root / "install.log")
        _bash(guide_block("install"), cwd=checkout, env=node, log=root / "install.log")
        imports = root / "imports.jsonl"
        _install_import_audit(env_path, imports)
        shutil.copytree(checkout / "dist", head / "dist")  # the guide's copy to the head node
        _bash(guide_block("unpack"), cwd=head, env=node, log=root / "unpack.log")
        cluster.wait()
        _bash(submit_command(cluster.url), cwd=head, env=node, log=root / "submit.log")
        state = cluster.state()
    records = [json.loads(line) for line in imports.read_text().splitlines()] if imports.exists() else []
    return SimpleNamespace(
        root=root,
        head=head,
        wheel=wheel,
        env_path=env_path,
        data_root=data_root,
        workers=cluster.workers,
        url=cluster.url,
        state=state,
        log=root / "submit.log",
        records=records,
        local=tiny_chain_project / "data",
    )


def test_the_run_environment_is_the_local_one_but_for_master_and_data_root(packaged_run):
    conf = packaged_run.head / "conf"
    assert not (packaged_run.head / "src").exists()
    ours, local = conf / ENV_NAME, conf / "test"
    assert sorted(p.name for p in ours.iterdir()) == sorted(
        [*(p.name for p in local.iterdir()), "globals.yml"]
    )
    for file in local.iterdir():
        changed = set(file.read_text().splitlines()) ^ set((ours / file.name).read_text().splitlines())
        expected = (
            {"spark.master: local[2]", f"spark.master: {packaged_run.url}"}
            if file.name == "spark.yml"
            else set()
        )
        assert changed == expected, file.name
    assert (ours / "globals.yml").read_text() == f"data_root: {packaged_run.data_root}\n"


def test_the_pipelines_ran_as_an_application_of_the_spark_3_cluster(packaged_run):
    apps = packaged_run.state["completedapps"] + packaged_run.state["activeapps"]
    assert len(apps) == 1 and packaged_run.state["aliveworkers"] == 2
    text = packaged_run.log.read_text()  # Spark's own log lines (Kedro's may wrap)
    assert re.search(r" SparkContext: Running Spark version 3\.5\.\d+$", text, flags=re.M)
    assert f"Connecting to master {packaged_run.url}..." in text
    assert len(set(re.findall(r"Granted executor ID (app-\S+/\d+)", text))) == 2  # one on each worker
    # the wheel's environment has no pyspark of its own: the cluster's came through spark-submit
    assert list(packaged_run.env_path.glob("lib/python3*/site-packages/kedro"))
    assert not list(packaged_run.env_path.glob("lib/python3*/site-packages/pyspark"))


def test_every_process_imported_the_project_from_the_wheel(packaged_run):
    """The driver and the executors' Python workers, each record read back: the module's file
    lies in landuse_kedro.zip (the wheel, shipped with --py-files), never in a checkout."""
    records = packaged_run.records
    head = packaged_run.head.resolve()
    workers = [w.resolve() for w in packaged_run.workers]
    executors = [r for r in records if any(Path(r["cwd"]).resolve().is_relative_to(w) for w in workers)]
    drivers = [r for r in records if Path(r["cwd"]).resolve() == head]
    assert drivers and executors, f"no import records from the driver and the executors: {records[:3]}"
    assert len(drivers) + len(executors) == len(records), "a process that is neither driver nor executor"
    assert {r["module"] for r in executors} >= {"landuse_kedro", "landuse_kedro.scoring"}
    # the application's folders on the workers: <worker>/app-*/<executor id>
    assert len({Path(r["cwd"]).resolve().parent.name for r in executors}) == 1

    def origin(record: dict) -> Path:
        return (Path(record["cwd"]) / record["origin"]).resolve()

    checkouts = [PROJECT_ROOT.resolve(), (packaged_run.root / "checkout").resolve()]
    from_checkout = [r for r in records if any(origin(r).is_relative_to(c) for c in checkouts)]
    assert not from_checkout, f"imported from a checkout: {from_checkout[:3]}"
    for record in records:
        shipped = Path(record["cwd"]).resolve() / "landuse_kedro.zip"
        assert origin(record).is_relative_to(shipped / "landuse_kedro"), f"not from the wheel: {record}"
        assert shipped.read_bytes() == packaged_run.wheel.read_bytes()  # the very wheel kedro package built
        assert Path(record["python"]) == packaged_run.env_path / "bin" / "python"


def _output_files(data: Path) -> dict[str, Path]:
    """The two pipelines' outputs under a data root by relative path; a Spark table folder is one."""
    found = {}
    for path in sorted(data.glob("0[78]_*/**/*")):
        if path.is_dir() != (path.suffix == ".parquet") or any(p.suffix == ".parquet" for p in path.parents):
            continue
        relative = path.relative_to(data).as_posix()
        if OWN_OUTPUTS.match(relative):
            found[relative] = path
    return found


def _table(path: Path) -> pd.DataFrame:
    """A table with its paths made relative to their data root (the runs' roots differ)."""
    frame = pd.read_parquet(path)
    for column in frame.select_dtypes("object").columns:
        frame[column] = frame[column].map(
            lambda v: LAYER_PREFIX.sub("<data_root>/", v) if isinstance(v, str) else v
        )
    keys = [c for c in ("region", "tile_id", "path", "row", "col") if c in frame.columns]
    return frame.sort_values(keys, ignore_index=True)


def test_the_outputs_equal_the_local_runs(packaged_run):
    ours, local = _output_files(packaged_run.data_root), _output_files(packaged_run.local)
    assert sorted(ours) == sorted(local)
    assert {
        "07_model_output/scoring_predictions.parquet",
        "07_model_output/development_predictions.parquet",
        "08_reporting/scoring_metrics.json",
    } <= set(ours)
    for name, path in ours.items():
        other = local[name]
        if name.endswith(".parquet"):
            a, b = _table(path), _table(other)
            assert len(a) > 0, name
            pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5, obj=name)
        elif name.endswith(".tif"):
            with rasterio.open(path) as a, rasterio.open(other) as b:
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=name)
                assert (a.transform, a.crs, a.nodata, without_run_ids(a.tags())) == (
                    b.transform,
                    b.crs,
                    b.nodata,
                    without_run_ids(b.tags()),
                ), name
        elif name.endswith(".png"):  # figures: drawn by each environment's matplotlib; same size
            assert Image.open(path).size == Image.open(other).size, name
        elif name.endswith((".json", ".geojson")):
            ours_json, local_json = json.loads(path.read_text()), json.loads(other.read_text())
            assert without_run_ids(ours_json) == without_run_ids(local_json), name
        else:
            assert path.read_text() == other.read_text(), name


def _processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose command line or working directory lies in ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:  # gone meanwhile
            continue
        if str(folder) in command or cwd.is_relative_to(folder):
            found.append(command)
    return found


def test_no_process_of_the_run_is_left(packaged_run):
    """Master, workers, executors, Python workers and driver all ended with the fixture."""
    probe = subprocess.Popen(["sleep", "60"], cwd=packaged_run.root / "cluster")
    try:  # the scan sees a process working in the run's folder (once it has exec'd)
        deadline = time.monotonic() + 10
        while not [c for c in _processes_in(packaged_run.root) if c.startswith("sleep 60")]:
            assert time.monotonic() < deadline, "the scan does not see a process in the run's folder"
            time.sleep(0.05)
    finally:
        probe.kill()
        probe.wait()
    assert _processes_in(packaged_run.root) == []
