"""Training at the walkthrough's scale: features on the Spark workers against scoring alone, the head's time,
the whole training run, the driver's peak memory and how time grows with the number of training tiles.

    .venv/bin/python benchmarks/training_scale.py [--raw data/01_raw] [--county 13x20]
        [--sizes 10000,20000,40000] [--score-tiles 2000] [--json training_scale.json] [--work DIR] [--keep]

The training set: data_preparation (a real ``kedro run``) on ``county_input.py``'s mosaic of the sample
scene (``--county`` ROWSxCOLS scene copies; 13x20 keeps about 45,000 training tiles, the walkthrough had
44,184), plus its 2 x 2 holdout as the validation region. The copies repeat pixels, and training computes
the features of a tile content once, so each PNG then gets bytes of its own (a text chunk naming it, pixels
unchanged): every tile costs its features, as distinct real tiles would. Each size N then trains in a fresh
project copy whose ``tile_manifest`` holds a seeded sample of N of those training tiles and every validation
tile (the PNGs are shared through hard links; the manifest decides which tiles belong), with an empty
feature table.

For each size, in one child process (``county_scale.py``'s: a real KedroSession, env ``county``, local[2]):
the Spark start and the workers' warm-up, then ``kedro run --pipelines training`` node by node; in a second
child, scoring alone (the spark_scoring node on ``--score-tiles`` of the PNGs, warm job) with an fp32
EfficientNet-Lite0 export: the same backbone and precision as the features model, which is fp32.
At the largest size the training runs again with another head learning rate: it must compute no feature.

Figures (wall clock; compare ratios within this run):
- features: tile-views computed / seconds of ``extract_tile_features`` (hashing the files, exporting the
  features model and the Spark job that computes and saves the features), against scoring-only images/s;
- head: ``training_history.json`` head_seconds (streaming the features from the table included);
- whole: the training run, Spark start and warm-up included; growth exponent: least-squares slope of
  log(seconds) against log(training tiles), 1 is linear;
- peak RSS of the driver: VmHWM of the Python process and of the Spark driver JVM (local[2]: the executors
  run in it), each read at the child's end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from county_scale import (  # noqa: E402  # noqa: E402
    ENV,
    county_conf,
    fp32_model,
    machine,
    run_child,
    sample_raw,
    save_scoring_model,
    slope,
)

from tests.helpers import make_project_copy  # noqa: E402


def make_distinct(tiles: Path) -> int:
    """Give every PNG under ``tiles`` bytes of its own: a ``tEXt`` chunk with its path after the header.
    The county's scene copies repeat pixels, and training computes a content's features once (by sha256),
    so without this 45,000 tiles would cost the features of the ~1,200 distinct ones. Pixels are unchanged."""
    count = 0
    for path in tiles.rglob("*.png"):
        data = path.read_bytes()
        body = b"tEXt" + b"landuse_tile\0" + str(path.relative_to(tiles)).encode()
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        path.write_bytes(data[:33] + chunk + data[33:])  # 33: the signature and the IHDR chunk
        count += 1
    return count


def subset_project(prep: Path, target: Path, county: Path, size: int, seed: int) -> Path:
    """A project copy training on ``size`` of ``prep``'s training tiles (seeded), all its validation tiles."""
    project = make_project_copy(target)
    county_conf(project, county)
    tiles = project / "data" / "05_model_input"
    for split in ("train", "validation"):  # hard links: the PNGs are shared, not copied
        shutil.copytree(prep / "data" / "05_model_input" / split, tiles / split, copy_function=os.link)
    manifest = pd.read_parquet(prep / "data" / "05_model_input" / "tile_manifest.parquet")
    train = manifest[manifest["split"] == "train"]
    if len(train) < size:
        raise SystemExit(
            f"data_preparation kept {len(train)} training tiles, fewer than {size}: use a larger --county"
        )
    chosen = train.iloc[np.sort(np.random.default_rng(seed).choice(len(train), size, replace=False))]
    pd.concat([chosen, manifest[manifest["split"] != "train"]]).to_parquet(tiles / "tile_manifest.parquet")
    return project


def head_setting(project: Path, learning_rate: float) -> None:
    """Another head learning rate, as configuration (conf/county), for the reuse run."""
    path = project / "conf" / ENV / "parameters.yml"
    params = yaml.safe_load(path.read_text())
    params["training"] = {"learning_rate": learning_rate}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def training_figures(project: Path, run: dict[str, Any]) -> dict[str, Any]:
    history = json.loads((project / "data" / "08_reporting" / "training_history.json").read_text())
    metrics = json.loads((project / "data" / "08_reporting" / "training_metrics.json").read_text())
    cache = history["feature_cache"]
    train, validation = history["train_tiles"], history["validation_tiles"]
    computed_views = cache["computed_tiles"] and (train * cache["views"] + validation)
    return {
        "train_tiles": train,
        "validation_tiles": validation,
        "computed_tiles": cache["computed_tiles"],
        "reused_tiles": cache["reused_tiles"],
        "tile_views": computed_views,
        "extract_seconds": run["nodes"]["extract_tile_features"],
        "head_seconds": history["head_seconds"],
        "epochs": len(history["epochs"]),
        "seconds": run["seconds"],
        "python_hwm_mb": run["python_hwm_mb"],
        "jvm_hwm_mb": run["jvm_hwm_mb"],
        "accuracy_6": metrics["accuracy_6"],
        "accuracy_6_int8": metrics["precisions"]["int8"]["accuracy_6"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "01_raw")
    parser.add_argument("--county", default="13x20", help="ROWSxCOLS scene copies for data_preparation")
    parser.add_argument("--sizes", default="10000,20000,40000", help="training tiles per size, ...")
    parser.add_argument("--score-tiles", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the projects and the county input")
    args = parser.parse_args()

    from county_input import build_county_input

    sizes = sorted(int(size) for size in args.sizes.split(","))
    rows, cols = (int(v) for v in args.county.split("x"))
    work = (args.work or Path(tempfile.mkdtemp(prefix="training_scale_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, info = time.perf_counter(), machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {' '.join(info['flags'])}; "
        f"load average {info['load'][0]:.2f} at start; work folder {work}"
    )
    raw = sample_raw(args.raw.resolve(), work)
    county = work / "county"
    build_county_input(raw, county, rows, cols)
    prep = make_project_copy(work / "prep" / "project")
    county_conf(prep, county)
    dp = run_child(prep, "data_preparation", work / "prep" / "dp.log", args)
    print(f"data_preparation on {args.county} copies: {dp['kept_total']} tiles kept in {dp['seconds']:.0f} s")
    tagged = make_distinct(prep / "data" / "05_model_input")
    print(f"{tagged} tile files given distinct bytes (the copies repeat pixels)")

    model, runs = fp32_model(), []
    for size in sizes:
        project = subset_project(prep, work / str(size) / "project", county, size, args.seed)
        save_scoring_model(project, model)  # the scoring-only baseline's model (and the warm-up's)
        png_root = project / "data" / "05_model_input" / "train"
        scoring = run_child(project, "scoring_only", work / str(size) / "scoring.log", args, png_root)
        run = training_figures(
            project, run_child(project, "training", work / str(size) / "training.log", args)
        )
        run["scoring_images_per_s"] = scoring["images"] / scoring["seconds"]
        run["views_per_s"] = run["tile_views"] / run["extract_seconds"]
        print(
            f"{size} training tiles: features {run['views_per_s']:.1f} tile-views/s "
            f"({run['views_per_s'] / run['scoring_images_per_s']:.2f}x scoring-only "
            f"{run['scoring_images_per_s']:.1f} images/s), whole training {run['seconds']:.0f} s"
        )
        if size == sizes[-1]:
            head_setting(project, 0.002)
            again = training_figures(
                project, run_child(project, "training", work / str(size) / "again.log", args)
            )
            run["again"] = again
        runs.append(run)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    report(runs, dp, info, time.perf_counter() - started, args.json)


def report(
    runs: list[dict[str, Any]], dp: dict[str, Any], info: dict[str, Any], seconds: float, out: Path | None
) -> None:
    print(
        f"\nTraining at scale on {info['cores']} cores ({', '.join(info['flags'])}); "
        f"load average {os.getloadavg()[0]:.2f} at the end; {seconds / 60:.1f} min in all"
    )
    print(
        "| training tiles | validation tiles | features tile-views/s | scoring-only images/s | ratio "
        "| head s (epochs) | whole training s | driver peak Python MB | driver peak JVM MB "
        "| accuracy 6-class fp32 / int8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['train_tiles']} | {run['validation_tiles']} | {run['views_per_s']:.1f} | "
            f"{run['scoring_images_per_s']:.1f} | {run['views_per_s'] / run['scoring_images_per_s']:.2f}x | "
            f"{run['head_seconds']:.1f} ({run['epochs']}) | {run['seconds']:.1f} | "
            f"{run['python_hwm_mb']:.0f} | {run['jvm_hwm_mb']:.0f} | "
            f"{100 * run['accuracy_6']:.1f} % / {100 * run['accuracy_6_int8']:.1f} % |"
        )
    if len(runs) > 1:  # growth needs several sizes
        exponent = slope([run["train_tiles"] for run in runs], [run["seconds"] for run in runs])
        print(f"Growth exponent of whole training time against training tiles: {exponent:.2f}")
        print(
            "Doubling ratios of whole training time: "
            + ", ".join(f"{b['seconds'] / a['seconds']:.2f}x" for a, b in zip(runs, runs[1:], strict=False))
        )
    again, first = runs[-1]["again"], runs[-1]
    print(
        f"Second run at {again['train_tiles']} tiles, another head learning rate: {again['computed_tiles']} "
        f"tiles' features computed, {again['reused_tiles']} reused; "
        f"extract node {again['extract_seconds']:.1f} s (first run {first['extract_seconds']:.1f} s); "
        f"whole training {again['seconds']:.1f} s (first {first['seconds']:.1f} s)"
    )
    if out is not None:
        out.write_text(json.dumps({"machine": info, "data_preparation": dp, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
