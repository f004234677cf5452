"""County scale: development_inference and data_preparation on a county-sized input, against
scoring alone, for the int8 and the fp32 scoring model in one run.

    .venv/bin/python benchmarks/county_scale.py [--raw data/01_raw] [--sizes 13x3,13x6,13x13]
        [--precision int8 fp32] [--score-tiles 2000] [--json county_scale.json] [--work DIR] [--keep]

Run it on a quiet machine: the default sizes take tens of minutes on 2 cores and several GB of
PNGs for a while (each size's project is deleted once measured, unless --keep; a failed run keeps
its work folder and names the child's log). Environment variables (KEDRO_DISABLE_TELEMETRY,
PYSPARK_PYTHON, SPARK_LOCAL_IP, TF_CPP_MIN_LOG_LEVEL) are set as the tests set them.

For each size ROWSxCOLS (copies of a sample scene, 196 tiles each for the 3136 px default scene; the
defaults give about 7,600 / 15,300 / 33,100 tiles), ``county_input.build_county_input`` makes a VRT
mosaic of the sample scene's ``01_raw`` (generated in a throw-away project when ``--raw`` has no NAIP)
plus NLCD covering it, and a throw-away project copy gets a ``conf/county`` environment that only
overrides configuration: ``naip_scenes`` (``.vrt``) and ``nlcd_rasters`` at the county, ``spark.yml``
as conf/local but ``local[2]`` without console progress, region ``county`` (NAIP 2016 vs NLCD 2011,
gallery NAIP 2012) and validation region ``holdout`` (a 2 x 2 mosaic south of the county).

The scoring models: EfficientNet-Lite0 with ImageNet weights and a fresh 6-class head exported to
ONNX (fp32: the trained model's graph and cost), and its int8 twin calibrated as training does (a
seeded sample of ``training.int8.calibration_tiles`` training tiles: here the smallest size's PNGs).
``--precision`` picks which to measure; by default ``scoring.precision`` (int8), then the other. Each
is saved as a new version of the copy's ``scoring_model`` through its catalog, where the pipelines
read it. Each pipeline runs through a real KedroSession (``env="county"``) in a fresh child process,
so memory figures are per size, pipeline and precision.

Figures (wall clock; another busy process on the 2 cores lowers them: see the load average):
- where the seconds go, per run: the Spark session's start, the Python workers' start with the
  project's imports and the model load (one task per core, before the pipeline; Spark reuses those
  workers), planning (the nodes before the score node), the score node, each output node, and the
  rest (dataset loads between nodes, Kedro's session and hooks). "Whole" is their sum: what a
  ``kedro run`` costs.
- DI tiles/s: county tiles / seconds of the whole development_inference run; score node: the same
  tiles / seconds from ``score_regions`` starting to ``development_predictions`` saved (the Spark job
  that reads, labels and scores every window).
- scoring-only images/s: ``score_images`` (the spark_scoring node) on local[2] with the same model
  file, precision and Spark settings, second (warm) job, on ``--score-tiles`` PNGs that
  data_preparation wrote at the smallest size (cycled when fewer). Ratio = DI tiles/s / scoring-only
  images/s, per precision.
- DP: data_preparation seconds (Spark start and workers' warm-up included, once per size: it uses no
  model); tiles seen (county + holdout, both years) and kept (written as PNG) per second, from
  preparation_report.json.
- growth exponent: least-squares slope of log(seconds) against log(tiles) over the sizes; 1 is
  linear. Marginal rates, (tiles largest - smallest) / (seconds largest - smallest), leave the
  fixed costs out, which dominate small sizes.
- peak RSS: VmHWM of the child (the Python driver) read at its end, and of the Spark driver JVM
  (a descendant, polled every 0.5 s and read again at the end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tests.helpers import make_project_copy  # noqa: E402  (also sets Spark/Kedro env variables)

if TYPE_CHECKING:
    from landuse_kedro.datasets.model_file import ModelArtifact

ENV = "county"
PIPELINES = ("development_inference", "data_preparation")


# ------------------------------------------------------------------ child side


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


class JvmWatch(threading.Thread):
    """Polls the VmHWM of the Spark driver JVM, a descendant of this process, every 0.5 s (not
    the short-lived launcher JVM that spark-class starts first to build the command line)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def poll(self) -> None:
        for pid in _descendants(os.getpid()):
            try:
                java = Path(f"/proc/{pid}/comm").read_text().strip() == "java"
                if java and b"launcher.Main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    self.peaks[pid] = max(self.peaks.get(pid, 0), _status_kb(pid, "VmHWM"))
            except OSError:
                continue

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.poll()

    def stop(self) -> int:
        self.done.set()
        self.join()
        self.poll()  # PySpark keeps the JVM until Python exits: this read is final
        return max(self.peaks.values(), default=0)


class NodeTimer:
    """Seconds per node: before_node_run to its last output saved (Spark jobs run in the save)."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self.start[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        self.end[node.name] = time.perf_counter()

    @hook_impl
    def after_dataset_saved(self, node: Node) -> None:
        self.end[node.name] = time.perf_counter()

    def seconds(self) -> dict[str, float]:
        return {name: round(self.end[name] - t, 2) for name, t in self.start.items()}


def child(project: Path, pipeline: str, result: Path, score_tiles: int, png_root: Path) -> None:
    """One pipeline run (or the scoring-only jobs) in this fresh process; figures to ``result``.

    The fixed costs are timed apart, in the order a run pays them: the Spark session (started here,
    as SparkHooks would at the first Spark node; the hook then reuses it), the Python workers'
    start with the project's imports and, for scoring, the model load (:func:`warm_workers`: one
    task per core, the workers Spark then reuses), then the pipeline itself, node by node.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from landuse_kedro.spark import start_spark

    os.chdir(project)
    bootstrap_project(project)
    watch, timer = JvmWatch(), NodeTimer()
    out: dict[str, Any] = {"pipeline": pipeline, "load_before": os.getloadavg()}
    watch.start()
    with KedroSession.create(project_path=project, env=ENV) as session:
        context = session.load_context()
        started = time.perf_counter()
        spark = start_spark(dict(context.config_loader["spark"]))
        out["spark_start_seconds"] = time.perf_counter() - started
        model = None if pipeline == "data_preparation" else context.catalog.load("scoring_model")
        out["model"] = model.summary() if model is not None else None
        out["warm_up_seconds"], out["workers"] = warm_workers(spark, model, context.params["scoring"])
        try:
            if pipeline == "scoring_only":
                out.update(_scoring_only(context, model, png_root, score_tiles))
            else:
                session._hook_manager.register(timer)  # no settings.py in a copy: add the hook here
                started = time.perf_counter()
                session.run(pipeline_names=[pipeline])
                out["run_seconds"], out["nodes"] = time.perf_counter() - started, timer.seconds()
                out["seconds"] = out["spark_start_seconds"] + out["warm_up_seconds"] + out["run_seconds"]
        finally:
            spark.stop()  # SparkHooks leaves a session it did not start running: stop it here
    out["jvm_hwm_mb"], out["jvm_pids"] = watch.stop() / 1024, sorted(watch.peaks)
    out["python_hwm_mb"] = _status_kb("self", "VmHWM") / 1024
    out["load_after"] = os.getloadavg()
    data = project / "data"
    if pipeline == "development_inference":
        import pyarrow.parquet as pq

        # On this process's own thread: a pd.read_parquet just before exit leaves Arrow's reader
        # threads to be torn down by the exit, which can abort it ("terminate called without an
        # active exception", SIGABRT; apache/arrow#34314), as this child once did after its run.
        tiles = pq.read_table(
            data / "07_model_output" / "development_tile_classes.parquet",
            columns=["tile_id", "error"],
            use_threads=False,
            pre_buffer=False,
        ).to_pandas(use_threads=False)
        out.update(
            tiles=len(tiles),
            unique_tiles=int(tiles["tile_id"].nunique()),
            failed=int(tiles["error"].notna().sum()),
        )
    elif pipeline == "data_preparation":
        report = json.loads((data / "08_reporting" / "preparation_report.json").read_text())
        out.update({k: report[k] for k in ("tiles_seen", "kept_total", "rejected", "usable")})
    result.write_text(json.dumps(out, indent=1))


def warm_workers(spark, model: ModelArtifact | None, scoring: dict[str, Any]) -> tuple[float, int]:
    """Seconds for one task per core to start its Python worker, import the project's Spark code
    and (given a model) load the model into the per-worker cache the scorers use
    (``scoring.cached_predictor``, same key and threads), and how many distinct workers did."""
    import pandas as pd

    from landuse_kedro.models.predictor import cached_predictor, model_key

    cores = spark.sparkContext.defaultParallelism
    payload = spark.sparkContext.broadcast(model.payload) if model is not None else None
    key, fmt = (model_key(model), model.format) if model is not None else ("", "onnx")
    threads = int(scoring["threads_per_worker"])

    def warm(frames):
        import landuse_kedro.window_jobs  # noqa: F401  (what every window task imports)

        for _ in frames:
            pass
        if payload is not None:
            cached_predictor(key, fmt, lambda: payload.value, threads)
        yield pd.DataFrame({"pid": [os.getpid()]})

    started = time.perf_counter()
    rows = spark.range(cores, numPartitions=cores).mapInPandas(warm, "pid long").collect()
    return time.perf_counter() - started, len({row.pid for row in rows})


def _scoring_only(context, model: ModelArtifact, png_root: Path, count: int) -> dict[str, Any]:
    """The spark_scoring node (``score_images``) twice on the same PNGs, with the same model file
    and precision as development_inference; the first job pays what warm_workers left (Arrow,
    listing), the second is warm."""
    from landuse_kedro.datasets.file_index import FileIndex
    from landuse_kedro.scoring import score_images
    from landuse_kedro.spark import active_spark_session

    params, spark = context.params, active_spark_session()
    pngs = sorted(str(p) for p in png_root.rglob("*.png"))
    if not pngs:
        raise SystemExit(f"no PNG tiles under {png_root}")
    index = FileIndex(tuple(pngs[i % len(pngs)] for i in range(count)))
    seconds, output = [], str(Path(tempfile.mkdtemp(prefix="scoring_only_")) / "p.parquet")
    try:
        for _ in range(2):
            started = time.perf_counter()
            frame = score_images(
                index,
                model,
                params["land_cover"],
                params["scoring"],
                params["spark_scoring"]["partitions_per_core"],
            )
            frame.write.mode("overwrite").parquet(output)
            seconds.append(time.perf_counter() - started)
            failed = spark.read.parquet(output).where("error is not null").count()
            assert failed == 0, f"{failed} scoring-only failures"
    finally:
        shutil.rmtree(Path(output).parent, ignore_errors=True)
    return {"images": count, "distinct_files": len(pngs), "seconds_cold": seconds[0], "seconds": seconds[1]}


# ------------------------------------------------------------------ parent side


def county_conf(project: Path, county: Path) -> None:
    """conf/county: configuration only, layered over base."""
    conf = project / "conf"
    base = yaml.safe_load((conf / "base" / "catalog_raw.yml").read_text())
    catalog = {}
    for name, folder, suffix in (("naip_scenes", "naip", ".vrt"), ("nlcd_rasters", "nlcd", ".tif")):
        catalog[name] = {**base[name], "path": str(county / folder), "filename_suffix": suffix}
    spark = yaml.safe_load((conf / "local" / "spark.yml").read_text()) or {}
    spark.update({"spark.master": "local[2]", "spark.ui.showConsoleProgress": False})
    params = {
        "development_inference": {
            "regions": ["county"],
            "newer_naip_year": 2016,
            "older_nlcd_year": 2011,
            "older_naip_year": 2012,
        },
        "data_preparation": {"validation_regions": ["holdout"]},
    }
    (conf / ENV).mkdir(exist_ok=True)
    for name, content in (("catalog", catalog), ("spark", spark), ("parameters", params)):
        (conf / ENV / f"{name}.yml").write_text(yaml.safe_dump(content, sort_keys=False))


def run_child(
    project: Path, pipeline: str, log: Path, args: argparse.Namespace, png_root: Path | None = None
) -> dict[str, Any]:
    result = log.with_suffix(".json")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(project),
        pipeline,
        str(result),
        "--score-tiles",
        str(args.score_tiles),
        "--png-root",
        str(png_root),
    ]
    with log.open("w") as handle:  # COLUMNS: rich wraps Kedro's log lines at 80 in a file
        done = subprocess.run(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "COLUMNS": "160"},
        )
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"{pipeline} failed (exit {done.returncode}); log: {log}")
    return json.loads(result.read_text())


def sample_raw(raw: Path, work: Path) -> Path:
    if any((raw / "naip").glob("*.tif")):
        return raw
    project = make_project_copy(work / "sample" / "project")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "sample_scene", "--env", "local"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    print(f"{raw} has no NAIP: sample scene generated in {time.perf_counter() - started:.0f} s")
    return project / "data" / "01_raw"


def fp32_model() -> ModelArtifact:
    """EfficientNet-Lite0 (ImageNet weights, shipped) with a fresh 6-class head, as ONNX: the trained
    model's graph and cost, without training."""
    from landuse_kedro.models import build_classifier
    from landuse_kedro.models.onnx_export import keras_to_onnx

    return keras_to_onnx(build_classifier("efficientnet_lite0", weights="imagenet", image_size=224))


def int8_model(fp32: ModelArtifact, tiles: Path) -> tuple[ModelArtifact, int]:
    """The int8 twin, calibrated as training's ``quantize_scoring_model`` does: on a seeded sample
    (``training.int8.calibration_tiles``, ``training.seed``) of training tiles, here the PNGs that
    data_preparation wrote under ``tiles``."""
    from landuse_kedro.models.onnx_export import artifact_to_onnx
    from landuse_kedro.models.quantize import calibration_sample, quantize_onnx
    from landuse_kedro.scoring import decode_image

    training = yaml.safe_load((ROOT / "conf" / "base" / "parameters_training.yml").read_text())["training"]
    pngs = sorted(tiles.rglob("*.png"))
    if not pngs:
        raise SystemExit(f"no training tiles under {tiles} to calibrate int8 on")
    chosen = calibration_sample(len(pngs), int(training["int8"]["calibration_tiles"]), training["seed"])
    images = np.stack([decode_image(pngs[i].read_bytes(), 224) for i in chosen])
    return quantize_onnx(artifact_to_onnx(fp32), images), len(chosen)


def save_scoring_model(project: Path, model: ModelArtifact) -> None:
    """A new version of ``scoring_model`` through the copy's own catalog, where the pipelines read it."""
    from _project import project_catalog

    with project_catalog(project, ENV) as catalog:
        catalog.save("scoring_model", model)


def default_precision() -> str:
    return yaml.safe_load((ROOT / "conf" / "base" / "parameters.yml").read_text())["scoring"]["precision"]


def slope(tiles: list[float], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(tiles), np.log(seconds), 1)[0]) if len(tiles) > 1 else math.nan


def machine() -> dict[str, Any]:
    from landuse_kedro.models.quantize import cpu_flags

    flags = [flag for flag, present in cpu_flags().items() if present]
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {"cpu": model, "cores": os.cpu_count(), "flags": flags, "load": os.getloadavg()}


def main() -> None:  # noqa: PLR0915 - one straight script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "01_raw")
    parser.add_argument("--sizes", default="13x3,13x6,13x13", help="ROWSxCOLS scene copies, ...")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=("int8", "fp32"),
        help="scoring model precisions to measure (default: scoring.precision, then the other)",
    )
    parser.add_argument("--score-tiles", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep each size's projects and input")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--png-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        project, pipeline, result = args.child
        child(Path(project), pipeline, Path(result), args.score_tiles, args.png_root)
        return

    from county_input import build_county_input

    default = default_precision()
    precisions = list(dict.fromkeys(args.precision or [default, {"int8": "fp32"}.get(default, "int8")]))
    sizes = sorted(
        (tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")),
        key=lambda size: size[0] * size[1],
    )
    work = (args.work or Path(tempfile.mkdtemp(prefix="county_scale_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, info = time.perf_counter(), machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {' '.join(info['flags'])}; "
        f"load average {info['load'][0]:.2f} at start; work folder {work}; precisions "
        f"{', '.join(precisions)} (project default {default})"
    )
    raw = sample_raw(args.raw.resolve(), work)
    models: dict[str, ModelArtifact] = {"fp32": fp32_model()}
    runs: list[dict[str, Any]] = []
    scoring: dict[str, dict[str, Any]] = {}
    for rows, cols in sizes:  # smallest first: its PNGs calibrate int8 and feed scoring-only
        name = f"{rows}x{cols}"
        county = build_county_input(raw, work / name / "county", rows, cols)
        project = make_project_copy(work / name / "project")
        county_conf(project, work / name / "county")
        run = {"size": name, "tiles": county["tiles"]["county_2016"], "county_seconds": county["seconds"]}
        dp = run["data_preparation"] = run_child(project, "data_preparation", work / name / "dp.log", args)
        print(f"{name} data_preparation: {dp['seconds']:.1f} s")
        if "int8" in precisions and "int8" not in models:
            models["int8"], calibrated = int8_model(
                models["fp32"], project / "data" / "05_model_input" / "train"
            )
            print(f"int8 model calibrated on {calibrated} training tiles of {name}")
        per_copy = (county["scene_px"] // 224) ** 2  # 196 for the 3136 px sample scenes
        assert dp["rejected"]["unreadable"] == 0, dp
        assert dp["tiles_seen"] == sum(county["tiles"].values()), (dp, county["tiles"])
        run["development_inference"] = {}
        for precision in precisions:
            save_scoring_model(project, models[precision])
            log = work / name / f"di_{precision}.log"
            di = run["development_inference"][precision] = run_child(
                project, "development_inference", log, args
            )
            assert di["model"]["precision"] == precision, di["model"]
            assert di["tiles"] == di["unique_tiles"] == run["tiles"] == rows * cols * per_copy, di
            assert di["failed"] == 0, di
            print(f"{name} development_inference ({precision}): {di['seconds']:.1f} s")
            if precision not in scoring:
                png_root = project / "data" / "05_model_input"
                log = work / name / f"scoring_only_{precision}.log"
                scoring[precision] = run_child(project, "scoring_only", log, args, png_root)
                rate = scoring[precision]["images"] / scoring[precision]["seconds"]
                print(f"scoring-only ({precision}): {rate:.1f} images/s warm")
        runs.append(run)
        if not args.keep:  # PNGs of a large size take GBs; logs stay until the end
            shutil.rmtree(project, ignore_errors=True)
            shutil.rmtree(work / name / "county", ignore_errors=True)
    if args.work is None and not args.keep:  # kept on a failure, for its logs
        shutil.rmtree(work, ignore_errors=True)
    report(runs, scoring, precisions, info, time.perf_counter() - started, args.json)


def _marginal(first: dict[str, Any], last: dict[str, Any], count: str, seconds: str) -> float:
    extra = last[seconds] - first[seconds]
    return (last[count] - first[count]) / extra if extra > 0 else math.nan


OUTPUT_NODES = "outputs (every node after score_regions)"


def fixed_costs(child_result: dict[str, Any], score_node: str | None) -> dict[str, float]:
    """Where a run's seconds go: Spark start, workers' warm-up (+ model load), then each node;
    with ``score_node``, the nodes before it are planning and those after it outputs."""
    costs = {
        "Spark session start": child_result["spark_start_seconds"],
        "Python workers' start + imports" + (" + model load" if child_result["model"] else ""): child_result[
            "warm_up_seconds"
        ],
    }
    nodes = child_result["nodes"]
    if score_node is None:
        costs.update(nodes)
        return costs
    names = list(nodes)
    at = names.index(score_node)
    costs["planning (nodes before the score node)"] = sum(nodes[n] for n in names[:at])
    costs[f"{score_node} (Spark job: read, label, score)"] = nodes[score_node]
    costs.update({f"  {n}": nodes[n] for n in names[at + 1 :]})
    costs[OUTPUT_NODES] = sum(nodes[n] for n in names[at + 1 :])
    costs["the rest: dataset loads, Kedro session, hooks"] = child_result["run_seconds"] - sum(nodes.values())
    return costs


def report(
    runs: list[dict[str, Any]],
    scoring: dict[str, dict[str, Any]],
    precisions: list[str],
    info: dict[str, Any],
    seconds: float,
    json_path: Path | None,
) -> None:
    score_rate = {p: scoring[p]["images"] / scoring[p]["seconds"] for p in precisions}
    rows = []
    for run in runs:
        dp = run["data_preparation"]
        for precision in precisions:
            di = run["development_inference"][precision]
            node = di["nodes"]["score_regions"]
            rss = {
                "development_inference": (di["python_hwm_mb"], di["jvm_hwm_mb"]),
                "data_preparation": (dp["python_hwm_mb"], dp["jvm_hwm_mb"]),
            }
            rows.append(
                {
                    "size": run["size"],
                    "precision": precision,
                    "tiles": run["tiles"],
                    "di_seconds": di["seconds"],
                    "di_tiles_per_s": run["tiles"] / di["seconds"],
                    "score_node_seconds": node,
                    "score_node_tiles_per_s": run["tiles"] / node,
                    "dp_seconds": dp["seconds"],
                    "dp_tiles_seen": dp["tiles_seen"],
                    "dp_seen_per_s": dp["tiles_seen"] / dp["seconds"],
                    "dp_kept": dp["kept_total"],
                    "dp_kept_per_s": dp["kept_total"] / dp["seconds"],
                    "rss_mb": {
                        p: {"python": py, "jvm": jvm, "sum": py + jvm} for p, (py, jvm) in rss.items()
                    },
                    "di_fixed_costs": fixed_costs(di, "score_regions"),
                    "dp_fixed_costs": fixed_costs(dp, None),
                    "load": [dp["load_before"][0], di["load_before"][0], di["load_after"][0]],
                }
            )
    print(
        "\n| size | precision | county tiles | DI s | DI tiles/s | score node s | score node tiles/s | DP s "
        "| DP seen/s | DP kept | DP kept/s | peak RSS DI py+JVM MB | peak RSS DP py+JVM MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rss = " | ".join(f"{v['python']:.0f} + {v['jvm']:.0f} = {v['sum']:.0f}" for v in r["rss_mb"].values())
        print(
            f"| {r['size']} | {r['precision']} | {r['tiles']:,} | {r['di_seconds']:.1f} | "
            f"{r['di_tiles_per_s']:.1f} | {r['score_node_seconds']:.1f} | "
            f"{r['score_node_tiles_per_s']:.1f} | {r['dp_seconds']:.1f} | "
            f"{r['dp_seen_per_s']:.1f} | {r['dp_kept']:,} | {r['dp_kept_per_s']:.1f} | {rss} |"
        )
    summary: dict[str, Any] = {}
    for precision in precisions:
        mine = [r for r in rows if r["precision"] == precision]
        first, last, tiles = mine[0], mine[-1], [r["tiles"] for r in mine]
        rate, job = score_rate[precision], scoring[precision]
        s = summary[precision] = {
            "scoring_only_images_per_s": rate,
            "scoring_only_first_job_images_per_s": job["images"] / job["seconds_cold"],
            "ratio_di_whole": last["di_tiles_per_s"] / rate,
            "ratio_di_score_node": last["score_node_tiles_per_s"] / rate,
            "growth_di": slope(tiles, [r["di_seconds"] for r in mine]),
            "growth_score_node": slope(tiles, [r["score_node_seconds"] for r in mine]),
            "marginal_di_tiles_per_s": _marginal(first, last, "tiles", "di_seconds"),
            "marginal_score_node_tiles_per_s": _marginal(first, last, "tiles", "score_node_seconds"),
            "model": job["model"],
        }
        print(
            f"\n[{precision}] scoring-only (score_images, local[2], warm, {job['images']} PNGs of 224 px, "
            f"{job['distinct_files']} distinct, {job['model']['bytes'] / 2**20:.1f} MB {precision} "
            f"model): {rate:.1f} images/s (first job {s['scoring_only_first_job_images_per_s']:.1f})"
        )
        for r in mine:
            print(
                f"[{precision}] {r['size']} ({r['tiles']:,} tiles): development_inference / scoring-only = "
                f"{r['di_tiles_per_s'] / rate:.2f} whole pipeline, {r['score_node_tiles_per_s'] / rate:.2f} "
                "score node"
            )
        growth = (
            f"; growth exponent (slope of log s vs log tiles) DI {s['growth_di']:.2f}, score node "
            f"{s['growth_score_node']:.2f}; marginal rates smallest -> largest (fixed costs out): DI "
            f"{s['marginal_di_tiles_per_s']:.1f} tiles/s ({s['marginal_di_tiles_per_s'] / rate:.2f}x "
            f"scoring-only), score node {s['marginal_score_node_tiles_per_s']:.1f} tiles/s"
            if len(mine) > 1
            else " (one size: no growth figures)"
        )
        print(
            f"[{precision}] largest size: DI / scoring-only {s['ratio_di_whole']:.2f} (whole), "
            f"{s['ratio_di_score_node']:.2f} (score node){growth}"
        )
        print(f"[{precision}] development_inference fixed costs at {last['size']} (s):")
        for what, value in last["di_fixed_costs"].items():
            print(f"    {what}: {value:.1f}")
    dp_rows = [r for r in rows if r["precision"] == precisions[0]]
    for r in dict.fromkeys((dp_rows[0]["size"], dp_rows[-1]["size"])):
        costs = next(x for x in dp_rows if x["size"] == r)["dp_fixed_costs"]
        print(
            f"data_preparation fixed costs and nodes at {r} (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in costs.items())
        )
    first, last = dp_rows[0], dp_rows[-1]
    dp = summary["data_preparation"] = {
        "growth_dp": slope([r["dp_tiles_seen"] for r in dp_rows], [r["dp_seconds"] for r in dp_rows]),
        "kept_per_s_largest": last["dp_kept_per_s"],
        "seen_per_s_largest": last["dp_seen_per_s"],
        "marginal_kept_per_s": _marginal(first, last, "dp_kept", "dp_seconds"),
        "time_ratio": last["dp_seconds"] / first["dp_seconds"],
        "tiles_ratio": last["tiles"] / first["tiles"],
    }
    growth = (
        f"; growth exponent {dp['growth_dp']:.2f}; marginal {dp['marginal_kept_per_s']:.1f} kept tiles/s; "
        f"time ratio {dp['time_ratio']:.2f} for {dp['tiles_ratio']:.2f}x the tiles (from {first['size']})"
        if len(dp_rows) > 1
        else ""
    )
    print(
        f"data_preparation at {last['size']}: {dp['kept_per_s_largest']:.1f} kept tiles/s "
        f"({dp['seen_per_s_largest']:.1f} seen/s){growth}"
    )
    rss_all = [v["sum"] for r in rows for v in r["rss_mb"].values()]
    print(
        f"driver peak RSS (Python VmHWM + JVM VmHWM): {min(rss_all):.0f}-{max(rss_all):.0f} MB over sizes, "
        f"pipelines and precisions (max/min {max(rss_all) / min(rss_all):.2f})"
    )
    if len(precisions) == 2:
        a, b = precisions
        at = {r["precision"]: r for r in rows if r["size"] == rows[-1]["size"]}
        print(
            f"{a} / {b}, same run: scoring-only {score_rate[a] / score_rate[b]:.2f}x, development_inference "
            f"at {rows[-1]['size']} {at[a]['di_tiles_per_s'] / at[b]['di_tiles_per_s']:.2f}x (whole), "
            f"{at[a]['score_node_tiles_per_s'] / at[b]['score_node_tiles_per_s']:.2f}x (score node)"
        )
    end_load = os.getloadavg()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags'])}; load "
        f"average {info['load'][0]:.2f} at start, {end_load[0]:.2f} at end "
        f"(1/5/15 min {' '.join(f'{v:.2f}' for v in end_load)}); whole benchmark {seconds:.0f} s"
    )
    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "machine": {**info, "load_end": end_load},
                    "precisions": precisions,
                    "sizes": rows,
                    "scoring_only": scoring,
                    "summary": summary,
                    "seconds": seconds,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
