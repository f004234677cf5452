"""Scoring throughput: int8 against fp32 ONNX, in-process batched prediction and the spark_scoring node
on local[2], plus both models' accuracy on the labelled validation tiles.

Same tiles, same cores, one run; PNG reading and decoding included everywhere. Prints images/s and
images per CPU-second (all threads of this process and its children: on a shared machine wall-clock
rates mostly measure the neighbours), the int8/fp32 ratios, the accuracy delta and the projected
time for the walkthrough's 11,760 validation tiles, and the CPU flags int8 speed depends on.

The models are the training pipeline's exports (`scoring_model_fp32`, `scoring_model_int8`) read
through the Data Catalog; without a trained project, an untrained classifier and its int8 twin
(calibrated on generated tiles) give the speeds, and no accuracy.

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

from _project import project_catalog  # noqa: E402  (benchmarks/_project.py)

from landuse_kedro.datasets.file_index import FileIndex, FileIndexDataset  # noqa: E402
from landuse_kedro.models.predictor import load_predictor, predict_classes  # noqa: E402
from landuse_kedro.scoring import decode_image, score_images  # noqa: E402

WALKTHROUGH_TILES = 11_760
CLASSES = ["Developed", "Cultivated", "Forest", "Shrub", "Barren", "Herbaceous"]
LAND_COVER = {
    "classes": CLASSES,
    "three_class": {"Developed": "Developed", "Cultivated": "Cultivated"},
    "three_class_other": "Undeveloped",
}


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and all its descendants (JVM, Python workers),
    from /proc: on a shared, busy machine, wall-clock rates mostly measure the neighbours, while
    CPU seconds per image measure our own cost."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    total, frontier = 0, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        total += stats.get(pid, (0, 0))[1]
        frontier.extend(child for child, (parent, _) in stats.items() if parent == pid)
    return total / ticks


class Meter:
    """Wall-clock and CPU seconds of a block; ``rates(n)`` -> (images/s, images per CPU-second)."""

    def __enter__(self) -> Meter:
        self.wall, self.cpu = time.perf_counter(), tree_cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, tree_cpu_seconds() - self.cpu

    def rates(self, images: int) -> tuple[float, float]:
        return images / self.wall, images / max(self.cpu, 1e-9)


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
        base = rng.integers(40, 200, 3) + 40 * np.sin(6 * x + rng.random() * 6)[..., None] * (
            y[..., None] > rng.random()
        )
        tile = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(tile).save(target / f"tile_{i:05d}.png")
    return FileIndexDataset(path=str(scratch), filename_suffix=".png").load()


def in_process(
    index: FileIndex, model_format: str, payload: bytes, *, threads: int, batch: int, size: int
) -> tuple[float, float]:
    """(images/s, images per CPU-second): read + decode + predict, batch after batch, in process."""
    predict = load_predictor(model_format, payload, threads)
    predict(np.zeros((batch, size, size, 3), np.uint8))  # warm-up: graph building, allocations
    with Meter() as meter:
        for first in range(0, len(index), batch):
            paths = index.urls[first : first + batch]
            predict(np.stack([decode_image(Path(p).read_bytes(), size) for p in paths]))
    return meter.rates(len(index))


def on_spark(
    index: FileIndex, artifacts: dict, scoring: dict, output: Path
) -> dict[str, list[tuple[float, float]]]:
    """For each model, (images/s, images per CPU-second) of the spark_scoring node writing Parquet:
    a first job (cold Python workers, model loading) and a second, warm one; one Spark session."""
    from landuse_kedro.spark import start_spark

    spark = start_spark(
        {
            "spark.master": "local[2]",
            "spark.ui.enabled": "false",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "256",
            "spark.sql.shuffle.partitions": "2",
            "spark.driver.memory": "2g",
            "spark.ui.showConsoleProgress": "false",
        }
    )
    rates: dict[str, list[tuple[float, float]]] = {}
    try:
        for name, artifact in artifacts.items():
            rates[name] = []
            for _ in range(2):
                with Meter() as meter:
                    frame = score_images(index, artifact, LAND_COVER, scoring)
                    frame.write.mode("overwrite").parquet(str(output))
                rates[name].append(meter.rates(len(index)))
                assert spark.read.parquet(str(output)).count() == len(index)
    finally:
        spark.stop()
    return rates


def trained_models(project: Path, env: str) -> dict | None:
    """The training pipeline's fp32 and int8 exports from the project's catalog, or None."""
    try:
        with project_catalog(project, env) as catalog:
            return {"fp32": catalog.load("scoring_model_fp32"), "int8": catalog.load("scoring_model_int8")}
    except Exception as error:  # noqa: BLE001 - no trained model yet
        print(f"No trained exports in {project} ({type(error).__name__}): an untrained classifier instead")
        return None


def untrained_models(size: int, calibration: np.ndarray) -> dict:
    from landuse_kedro.models import build_classifier
    from landuse_kedro.models.onnx_export import keras_to_onnx
    from landuse_kedro.models.quantize import quantize_onnx

    fp32 = keras_to_onnx(build_classifier("efficientnet_lite0", weights="imagenet", image_size=size))
    return {"fp32": fp32, "int8": quantize_onnx(fp32, calibration)}


def labelled(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Images and class indices of ``folder/<Class>/*.png`` (the validation tiles), or None."""
    paths = sorted(p for p in folder.glob("*/*.png") if p.parent.name in CLASSES) if folder.is_dir() else []
    if not paths:
        return None
    images = np.stack([decode_image(p.read_bytes(), size) for p in paths])
    return images, np.array([CLASSES.index(p.parent.name) for p in paths])


def accuracy(artifact, images: np.ndarray, labels: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    predict = load_predictor(artifact.format, artifact.payload, os.cpu_count() or 2)
    predicted = predict_classes(predict, images, batch)
    return float(np.mean(predicted == labels)), predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="labelled tiles (<Class>/*.png): accuracy, and speed when there are enough "
        "(default: the --project's data/05_model_input/validation)",
    )
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="where the trained exports are")
    parser.add_argument("--env", default="local")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="threads for in-process inference (Spark: local[2], 1 thread per worker)",
    )
    parser.add_argument("--no-prefetch", action="store_true", help="Spark: decode and predict in turn")
    args = parser.parse_args()
    args.folder = args.folder or args.project / "data" / "05_model_input" / "validation"

    from landuse_kedro.models.quantize import describe_cpu

    cores = os.cpu_count() or 2
    print(f"{cores} cores ({describe_cpu()}); load average at start {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        index = tiles_for(args.folder, args.tiles, args.size, Path(scratch) / "tiles")
        artifacts = trained_models(args.project.resolve(), args.env)
        if artifacts is None:
            calibration = np.stack([decode_image(Path(p).read_bytes(), args.size) for p in index.urls[:128]])
            artifacts = untrained_models(args.size, calibration)
        print(
            f"{len(index)} tiles {args.size}x{args.size}, EfficientNet-Lite0 classifier, "
            f"batch {args.batch_size}; fp32 {len(artifacts['fp32'].payload) / 2**20:.1f} MB, "
            f"int8 {len(artifacts['int8'].payload) / 2**20:.1f} MB",
            flush=True,
        )
        rates = {}
        for name, artifact in artifacts.items():
            rates[name] = in_process(
                index,
                artifact.format,
                artifact.payload,
                threads=args.threads,
                batch=args.batch_size,
                size=args.size,
            )
            print(
                f"in-process {name} ({args.threads} threads): {rates[name][0]:7.1f} images/s, "
                f"{rates[name][1]:6.1f} images per CPU-second",
                flush=True,
            )
        scoring = {
            "backend": "onnx",
            "batch_size": args.batch_size,
            "threads_per_worker": 1,
            "image_size": args.size,
            "prefetch": not args.no_prefetch,
        }
        spark = on_spark(index, artifacts, scoring, Path(scratch) / "predictions.parquet")
    for name, (cold, warm) in spark.items():
        for label, (rate, per_cpu) in (("first job", cold), ("warm", warm)):
            print(
                f"spark_scoring {name} local[2], {label:9s}: {rate:7.1f} images/s, "
                f"{per_cpu:6.1f} images per CPU-second"
            )
    in_ratio = rates["int8"][0] / rates["fp32"][0], rates["int8"][1] / rates["fp32"][1]
    spark_ratio = spark["int8"][1][0] / spark["fp32"][1][0], spark["int8"][1][1] / spark["fp32"][1][1]
    print(
        f"int8 / fp32: in-process {in_ratio[0]:.2f}x images/s, {in_ratio[1]:.2f}x per CPU-second; "
        f"Spark warm {spark_ratio[0]:.2f}x images/s, {spark_ratio[1]:.2f}x per CPU-second"
    )
    faster = min(in_ratio[1], spark_ratio[1]) >= 1.3
    truth = labelled(args.folder, args.size)
    if truth is None:
        print(f"No labelled tiles in {args.folder}: no accuracy")
    else:
        (acc32, p32), (acc8, p8) = (accuracy(artifacts[n], *truth, args.batch_size) for n in ("fp32", "int8"))
        delta = 100 * (acc8 - acc32)
        print(
            f"6-class accuracy on {len(truth[1])} labelled tiles: fp32 {100 * acc32:.1f}%, "
            f"int8 {100 * acc8:.1f}% "
            f"(delta {delta:+.1f} points; same class on {100 * np.mean(p8 == p32):.1f}% of tiles)"
        )
        print(
            f"int8 default rule (>= 1.3x per CPU-second and within 1 point): "
            f"{'met' if faster and delta >= -1.0 else 'NOT met'}"
        )
    warm = spark["int8"][1]
    print(
        f"projected for {WALKTHROUGH_TILES:,} tiles with int8: Spark {WALKTHROUGH_TILES / warm[0]:.0f} s "
        f"({WALKTHROUGH_TILES / (warm[1] * cores):.0f} s if the {cores} cores were ours alone); "
        f"fp32 {WALKTHROUGH_TILES / spark['fp32'][1][0]:.0f} s"
    )
    print(
        f"load average at the end: {os.getloadavg()[0]:.1f} on {cores} cores "
        "(above the core count, wall-clock figures understate what the code does)"
    )


if __name__ == "__main__":
    main()
