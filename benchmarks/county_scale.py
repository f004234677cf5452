"""County scale (issue 10): development_inference and data_preparation on a county-sized input.

    .venv/bin/python benchmarks/county_scale.py [--raw data/01_raw] [--sizes 13x3,13x6,13x13]
        [--score-tiles 2000] [--json county_scale.json] [--work DIR] [--keep]

Run it on a quiet machine: the default sizes take tens of minutes on 2 cores and several GB of
PNGs for a while (each size's project is deleted once measured, unless --keep; a failed run keeps
its work folder and names the child's log). Environment variables (KEDRO_DISABLE_TELEMETRY,
PYSPARK_PYTHON, SPARK_LOCAL_IP, TF_CPP_MIN_LOG_LEVEL) are set as the tests set them.

For each size ROWSxCOLS (copies of a 3136 px sample scene = 196 tiles each; the defaults give about
7,600 / 15,300 / 33,100 tiles), ``county_input.build_county_input`` makes a VRT mosaic of the
sample scene's ``01_raw`` (generated in a throw-away project when ``--raw`` has no NAIP) plus NLCD
covering it, and a throw-away project copy gets a ``conf/county`` environment that only overrides
configuration: ``naip_scenes`` (``.vrt``) and ``nlcd_rasters`` at the county, ``spark.yml`` as
conf/local but ``local[2]`` without console progress, region ``county`` (NAIP 2016 vs NLCD 2011,
gallery NAIP 2012) and validation region ``holdout`` (a 2 x 2 mosaic south of the county). The
scoring model, EfficientNet-Lite0 with ImageNet weights and a fresh 6-class head exported to ONNX,
is built once here and saved into every copy. Each pipeline runs through a real KedroSession
(``env="county"``) in a fresh child process, so memory figures are per size and pipeline.

Figures (wall clock; another busy process on the 2 cores lowers them: see the load average):
- DI tiles/s: county tiles / seconds of the whole development_inference run (``session.run``,
  Spark start included); score node: the same tiles / seconds from ``score_regions`` starting to
  ``development_predictions`` saved (the Spark job that reads, labels and scores every window).
- scoring-only images/s: ``score_images`` (the spark_scoring node) on local[2] with the same model
  and Spark settings, second (warm) job, on ``--score-tiles`` PNGs that data_preparation wrote at
  the smallest size (cycled when fewer). Ratio = DI tiles/s / scoring-only images/s; bar >= 0.8.
- DP: data_preparation seconds; tiles seen (county + holdout, both years) and kept (written as
  PNG) per second, from preparation_report.json; bar: kept/s >= 3 x 78 = 234 (issue 10) and
  3 x 55.6 (benchmarks/prepare_tiles.py with the code before issue 10, AMD EPYC AVX-512, 2026-12-01, quiet).
- growth exponent: least-squares slope of log(seconds) against log(tiles) over the sizes; 1 is
  linear, "doubling takes at most 2.2x" means <= log2(2.2) = 1.14. Marginal rates, (tiles
  largest - smallest) / (seconds largest - smallest), leave the fixed costs out (Spark start,
  cold Python workers), which dominate small sizes.
- peak RSS: VmHWM of the child (the Python driver) read at its end, and of the Spark driver JVM
  (a descendant, polled every 0.5 s and read again at the end); bar: sum < 1.5 GB, ~constant.
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

from tests.conftest import make_project_copy  # noqa: E402  (also sets Spark/Kedro env variables)

if TYPE_CHECKING:
    from kedro.framework.session import KedroSession

    from landuse_kedro.datasets.model_file import ModelArtifact

ENV = "county"
PIPELINES = ("development_inference", "data_preparation")
BAR_RATIO, BAR_GROWTH, BAR_RSS_MB = 0.8, 2.2, 1536
BAR_KEPT, BASELINE_KEPT = 3 * 78, 55.6  # issue 10's 78 tiles/s; the old code measured on 2 AVX-512 cores


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
    """One pipeline run (or the scoring-only jobs) in this fresh process; figures to ``result``."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.chdir(project)
    bootstrap_project(project)
    watch, timer = JvmWatch(), NodeTimer()
    out: dict[str, Any] = {"pipeline": pipeline, "load_before": os.getloadavg()}
    watch.start()
    with KedroSession.create(project_path=project, env=ENV) as session:
        if pipeline == "scoring_only":
            out.update(_scoring_only(session, png_root, score_tiles))
        else:
            session._hook_manager.register(timer)  # no settings.py in a copy: add the hook here
            started = time.perf_counter()
            session.run(pipeline_names=[pipeline])
            out["seconds"], out["nodes"] = time.perf_counter() - started, timer.seconds()
    out["jvm_hwm_mb"], out["jvm_pids"] = watch.stop() / 1024, sorted(watch.peaks)
    out["python_hwm_mb"] = _status_kb("self", "VmHWM") / 1024
    out["load_after"] = os.getloadavg()
    data = project / "data"
    if pipeline == "development_inference":
        import pandas as pd

        tiles = pd.read_parquet(data / "07_model_output" / "development_tile_classes.parquet")
        out.update(
            tiles=len(tiles),
            unique_tiles=int(tiles["tile_id"].nunique()),
            failed=int(tiles["error"].notna().sum()),
        )
    elif pipeline == "data_preparation":
        report = json.loads((data / "08_reporting" / "preparation_report.json").read_text())
        out.update({k: report[k] for k in ("tiles_seen", "kept_total", "rejected", "usable")})
    result.write_text(json.dumps(out, indent=1))


def _scoring_only(session: KedroSession, png_root: Path, count: int) -> dict[str, Any]:
    """The spark_scoring node (``score_images``) twice on the same PNGs; the second job is warm."""
    from landuse_kedro.datasets.file_index import FileIndex
    from landuse_kedro.hooks import start_spark
    from landuse_kedro.scoring import score_images

    context = session.load_context()
    params, model = context.params, context.catalog.load("scoring_model")
    pngs = sorted(str(p) for p in png_root.rglob("*.png"))
    if not pngs:
        raise SystemExit(f"no PNG tiles under {png_root}")
    index = FileIndex(tuple(pngs[i % len(pngs)] for i in range(count)))
    spark = start_spark(dict(context.config_loader["spark"]))
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
        spark.stop()
        shutil.rmtree(Path(output).parent, ignore_errors=True)
    return {"images": count, "distinct_files": len(pngs), "seconds_cold": seconds[0], "seconds": seconds[1]}


# ------------------------------------------------------------------ parent side


def county_conf(project: Path, county: Path) -> None:
    """conf/county: configuration only, layered over base."""
    conf = project / "conf"
    base = yaml.safe_load((conf / "base" / "catalog_data_preparation.yml").read_text())
    catalog = {}
    for name, folder, suffix in (("naip_scenes", "naip", ".vrt"), ("nlcd_rasters", "nlcd", ".tif")):
        catalog[name] = {**base[name], "path": str(county / folder), "filename_suffix": suffix}
    spark = yaml.safe_load((conf / "local" / "spark.yml").read_text()) or {}
    spark.update({"spark.master": "local[2]", "spark.ui.showConsoleProgress": False})
    params = {
        "development_inference": {
            "regions": ["county"],
            "newer_year": 2016,
            "older_year": 2011,
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


def scoring_model() -> ModelArtifact:
    from landuse_kedro.models import build_classifier
    from landuse_kedro.models.onnx_export import keras_to_onnx

    return keras_to_onnx(build_classifier("efficientnet_lite0", weights="imagenet", image_size=224))


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
    from kedro.io.core import Version

    from landuse_kedro.datasets.model_file import ModelFileDataset

    sizes = sorted(
        (tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")),
        key=lambda size: size[0] * size[1],
    )
    work = (args.work or Path(tempfile.mkdtemp(prefix="county_scale_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, info = time.perf_counter(), machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {' '.join(info['flags'])}; "
        f"load average {info['load'][0]:.2f} at start; work folder {work}"
    )
    raw = sample_raw(args.raw.resolve(), work)
    artifact = scoring_model()
    runs: list[dict[str, Any]] = []
    scoring: dict[str, Any] = {}
    for rows, cols in sizes:  # smallest first: its PNGs feed scoring-only
        name = f"{rows}x{cols}"
        county = build_county_input(raw, work / name / "county", rows, cols)
        project = make_project_copy(work / name / "project")
        county_conf(project, work / name / "county")
        ModelFileDataset(
            filepath=str(project / "data" / "06_models" / "scoring_model"), version=Version(None, None)
        ).save(artifact)
        run = {"size": name, "tiles": county["tiles"]["county_2016"], "county_seconds": county["seconds"]}
        for pipeline in PIPELINES:
            run[pipeline] = run_child(project, pipeline, work / name / f"{pipeline}.log", args)
            print(f"{name} {pipeline}: {run[pipeline]['seconds']:.1f} s")
        di, dp = run["development_inference"], run["data_preparation"]
        per_copy = (county["scene_px"] // 224) ** 2  # 196 for the 3136 px sample scenes
        assert di["tiles"] == di["unique_tiles"] == run["tiles"] == rows * cols * per_copy, di
        assert di["failed"] == 0 and dp["rejected"]["unreadable"] == 0, (di, dp)
        assert dp["tiles_seen"] == sum(county["tiles"].values()), (dp, county["tiles"])
        runs.append(run)
        if not scoring:
            scoring = run_child(
                project,
                "scoring_only",
                work / name / "scoring_only.log",
                args,
                project / "data" / "05_model_input",
            )
            print(f"scoring-only: {scoring['images'] / scoring['seconds']:.1f} images/s warm")
        if not args.keep:  # PNGs of a large size take GBs; logs stay until the end
            shutil.rmtree(project, ignore_errors=True)
            shutil.rmtree(work / name / "county", ignore_errors=True)
    if args.work is None and not args.keep:  # kept on a failure, for its logs
        shutil.rmtree(work, ignore_errors=True)
    report(runs, scoring, info, time.perf_counter() - started, args.json)


def _marginal(first: dict[str, Any], last: dict[str, Any], count: str, seconds: str) -> float:
    extra = last[seconds] - first[seconds]
    return (last[count] - first[count]) / extra if extra > 0 else math.nan


def report(
    runs: list[dict[str, Any]],
    scoring: dict[str, Any],
    info: dict[str, Any],
    seconds: float,
    json_path: Path | None,
) -> None:
    score_rate = scoring["images"] / scoring["seconds"]
    rows = []
    for run in runs:
        di, dp = run["development_inference"], run["data_preparation"]
        node = di["nodes"]["score_regions"]
        rss = {p: (run[p]["python_hwm_mb"], run[p]["jvm_hwm_mb"]) for p in PIPELINES}
        rows.append(
            {
                "size": run["size"],
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
                "rss_mb": {p: {"python": py, "jvm": jvm, "sum": py + jvm} for p, (py, jvm) in rss.items()},
                "di_nodes": di["nodes"],
                "dp_nodes": dp["nodes"],
                "load": [di["load_before"][0], di["load_after"][0], dp["load_after"][0]],
            }
        )
    print(
        "\n| size | county tiles | DI s | DI tiles/s | score node s | score node tiles/s | DP s "
        "| DP seen/s | DP kept | DP kept/s | peak RSS DI py+JVM MB | peak RSS DP py+JVM MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rss = " | ".join(f"{v['python']:.0f} + {v['jvm']:.0f} = {v['sum']:.0f}" for v in r["rss_mb"].values())
        print(
            f"| {r['size']} | {r['tiles']:,} | {r['di_seconds']:.1f} | "
            f"{r['di_tiles_per_s']:.1f} | {r['score_node_seconds']:.1f} | "
            f"{r['score_node_tiles_per_s']:.1f} | {r['dp_seconds']:.1f} | "
            f"{r['dp_seen_per_s']:.1f} | {r['dp_kept']:,} | {r['dp_kept_per_s']:.1f} | {rss} |"
        )
    first, last, tiles = rows[0], rows[-1], [r["tiles"] for r in rows]
    summary = {
        "scoring_only_images_per_s": score_rate,
        "scoring_only_first_job_images_per_s": scoring["images"] / scoring["seconds_cold"],
        "ratio_di_whole": last["di_tiles_per_s"] / score_rate,
        "ratio_di_score_node": last["score_node_tiles_per_s"] / score_rate,
        "growth_di": slope(tiles, [r["di_seconds"] for r in rows]),
        "growth_score_node": slope(tiles, [r["score_node_seconds"] for r in rows]),
        "growth_dp": slope([r["dp_tiles_seen"] for r in rows], [r["dp_seconds"] for r in rows]),
        "tiles_ratio": last["tiles"] / first["tiles"],
        "time_ratio_di": last["di_seconds"] / first["di_seconds"],
        "time_ratio_dp": last["dp_seconds"] / first["dp_seconds"],
        "rss_max_mb": max(v["sum"] for r in rows for v in r["rss_mb"].values()),
        "rss_min_mb": min(v["sum"] for r in rows for v in r["rss_mb"].values()),
        "dp_kept_per_s_largest": last["dp_kept_per_s"],
        # (tiles(largest) - tiles(smallest)) / (time(largest) - time(smallest)): fixed costs out
        "marginal_di_tiles_per_s": _marginal(first, last, "tiles", "di_seconds"),
        "marginal_score_node_tiles_per_s": _marginal(first, last, "tiles", "score_node_seconds"),
        "marginal_dp_kept_per_s": _marginal(first, last, "dp_kept", "dp_seconds"),
    }
    s, met = summary, (lambda ok: "met" if ok else "NOT met")
    print(
        f"\nscoring-only (score_images, local[2], warm, {scoring['images']} PNGs of 224 px, "
        f"{scoring['distinct_files']} distinct): {score_rate:.1f} images/s "
        f"(first job {s['scoring_only_first_job_images_per_s']:.1f})"
    )
    for r in rows:
        print(
            f"{r['size']}: DI / scoring-only = {r['di_tiles_per_s'] / score_rate:.2f} whole "
            f"pipeline, {r['score_node_tiles_per_s'] / score_rate:.2f} score node"
        )
    print(
        f"largest size: DI / scoring-only {s['ratio_di_whole']:.2f} (whole), "
        f"{s['ratio_di_score_node']:.2f} (score node); bar >= {BAR_RATIO}: "
        f"{met(s['ratio_di_whole'] >= BAR_RATIO)} (whole), "
        f"{met(s['ratio_di_score_node'] >= BAR_RATIO)} (node)"
    )
    growth_bar = math.log2(BAR_GROWTH)
    print(
        f"growth exponent (slope of log s vs log tiles): DI {s['growth_di']:.2f}, score node "
        f"{s['growth_score_node']:.2f}, DP {s['growth_dp']:.2f}; bar <= {growth_bar:.2f} "
        f"(doubling <= {BAR_GROWTH}x): {met(max(s['growth_di'], s['growth_dp']) <= growth_bar)}"
    )
    print(
        f"time(largest)/time(smallest): DI {s['time_ratio_di']:.2f}, DP {s['time_ratio_dp']:.2f} "
        f"for {s['tiles_ratio']:.2f}x the county tiles"
    )
    print(
        f"driver peak RSS (Python VmHWM + JVM VmHWM): {s['rss_min_mb']:.0f}-"
        f"{s['rss_max_mb']:.0f} MB over sizes and pipelines; bar < {BAR_RSS_MB} MB: "
        f"{met(s['rss_max_mb'] < BAR_RSS_MB)}, max/min {s['rss_max_mb'] / s['rss_min_mb']:.2f}"
    )
    print(
        f"marginal rates, smallest -> largest size (fixed costs such as Spark start and cold "
        f"workers out): DI {s['marginal_di_tiles_per_s']:.1f} tiles/s, score node "
        f"{s['marginal_score_node_tiles_per_s']:.1f} tiles/s, DP "
        f"{s['marginal_dp_kept_per_s']:.1f} kept tiles/s"
    )
    kept = s["dp_kept_per_s_largest"]
    print(
        f"data_preparation kept tiles/s at the largest size: {kept:.1f}; bar 3 x 78 = "
        f"{BAR_KEPT}: {met(kept >= BAR_KEPT)}; 3 x {BASELINE_KEPT} (old code on 2 AVX-512 cores) = "
        f"{3 * BASELINE_KEPT:.1f}: {met(kept >= 3 * BASELINE_KEPT)}"
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
