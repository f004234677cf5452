"""Scoring throughput: in-process batched prediction (each backend) vs the spark_scoring node on local[2].

Same tiles, same model, same cores; PNG reading and decoding included everywhere. Prints images/s,
the Spark / in-process ratio and the projected time for the walkthrough's 11,760 validation tiles.
Our bar: Spark within 10% of in-process, and at least 150 images/s end to end.

    .venv/bin/python benchmarks/scoring_throughput.py [--tiles 2000] [--folder data/05_model_input/validation]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

from landuse_kedro.datasets.file_index import FileIndex, FileIndexDataset  # noqa: E402
from landuse_kedro.scoring import decode_image, load_predictor, score_images  # noqa: E402

WALKTHROUGH_TILES = 11_760
CLASSES = ["Developed", "Cultivated", "Forest", "Shrub", "Barren", "Herbaceous"]
LAND_COVER = {"classes": CLASSES, "three_class": {"Developed": "Developed", "Cultivated": "Cultivated"},
              "three_class_other": "Undeveloped"}


def tiles_for(folder: Path | None, count: int, size: int, scratch: Path) -> FileIndex:
    """The first ``count`` PNGs under ``folder``, or ``count`` generated tiles (smooth fields plus
    texture, so PNG sizes and decode times resemble aerial tiles rather than pure noise)."""
    if folder is not None and folder.is_dir():
        index = FileIndexDataset(path=str(folder), filename_suffix=".png").load()
        if len(index) >= count:
            return FileIndex(index.urls[:count], index.protocol, index.storage_options)
        print(f"{folder} holds {len(index)} tiles, fewer than {count}: generating tiles instead")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        target = scratch / CLASSES[i % len(CLASSES)]
        target.mkdir(parents=True, exist_ok=True)
        base = rng.integers(40, 200, 3) + 40 * np.sin(6 * x + rng.random() * 6)[..., None] * (y[..., None] > rng.random())
        tile = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(tile).save(target / f"tile_{i:05d}.png")
    return FileIndexDataset(path=str(scratch), filename_suffix=".png").load()


def in_process(index: FileIndex, model_format: str, payload: bytes, *, threads: int, batch: int,
               size: int) -> float:
    """images/s: read + decode + predict, batch after batch, in this process."""
    predict = load_predictor(model_format, payload, threads)
    predict(np.zeros((batch, size, size, 3), np.uint8))  # warm-up: graph building, allocations
    start = time.perf_counter()
    for first in range(0, len(index), batch):
        paths = index.urls[first:first + batch]
        predict(np.stack([decode_image(Path(p).read_bytes(), size) for p in paths]))
    return len(index) / (time.perf_counter() - start)


def on_spark(index: FileIndex, artifact, scoring: dict, output: Path) -> tuple[float, float]:
    """images/s of the spark_scoring node writing Parquet: first job (cold Python workers) and
    a second, warm one."""
    from landuse_kedro.hooks import start_spark

    spark = start_spark({"spark.master": "local[2]", "spark.ui.enabled": "false",
                         "spark.sql.execution.arrow.pyspark.enabled": "true",
                         "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
                         "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g"})
    rates = []
    try:
        for _ in range(2):
            start = time.perf_counter()
            score_images(index, artifact, LAND_COVER, scoring).write.mode("overwrite").parquet(str(output))
            rates.append(len(index) / (time.perf_counter() - start))
            assert spark.read.parquet(str(output)).count() == len(index)
    finally:
        spark.stop()
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--folder", type=Path, default=Path("data/05_model_input/validation"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="threads for in-process inference (Spark: local[2], 1 thread per worker)")
    parser.add_argument("--no-prefetch", action="store_true", help="Spark: decode and predict in turn")
    args = parser.parse_args()

    from landuse_kedro.models import build_classifier
    from landuse_kedro.models.onnx_export import keras_to_artifact, keras_to_onnx

    model = build_classifier("efficientnet_lite0", weights="imagenet", image_size=args.size)
    artifacts = {"onnx": keras_to_onnx(model), "keras": keras_to_artifact(model)}
    with tempfile.TemporaryDirectory() as scratch:
        index = tiles_for(args.folder, args.tiles, args.size, Path(scratch) / "tiles")
        print(f"{len(index)} tiles {args.size}x{args.size}, EfficientNet-Lite0 classifier, "
              f"batch {args.batch_size}, {os.cpu_count()} cores")
        rates = {}
        for name, artifact in artifacts.items():
            rates[name] = in_process(index, artifact.format, artifact.payload, threads=args.threads,
                                     batch=args.batch_size, size=args.size)
            print(f"in-process {name:5s} ({args.threads} threads): {rates[name]:7.1f} images/s")
        scoring = {"backend": "onnx", "batch_size": args.batch_size, "threads_per_worker": 1,
                   "image_size": args.size, "prefetch": not args.no_prefetch}
        cold, warm = on_spark(index, artifacts["onnx"], scoring, Path(scratch) / "predictions.parquet")
    print(f"spark_scoring onnx local[2]: {cold:7.1f} images/s first job, {warm:7.1f} warm")
    ratio = warm / rates["onnx"]
    print(f"Spark / in-process (onnx): {ratio:.2f} (first job {cold / rates['onnx']:.2f}); "
          f"bar >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'}")
    print(f"projected for {WALKTHROUGH_TILES:,} tiles: Spark {WALKTHROUGH_TILES / warm:.0f} s "
          f"(first job rate {WALKTHROUGH_TILES / cold:.0f} s), in-process onnx "
          f"{WALKTHROUGH_TILES / rates['onnx']:.0f} s, keras {WALKTHROUGH_TILES / rates['keras']:.0f} s; "
          f"bar >= 150 images/s: {'met' if warm >= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
