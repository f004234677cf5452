"""Training speed of the default model: seconds per epoch (head only, and with the top blocks
fine-tuned) and validation images/s, on synthetic 224 x 224 tiles through the pipeline's own
tf.data input and augmentation.

    .venv/bin/python benchmarks/training_speed.py [--tiles 512] [--validation 256] [--epochs 2]

Speed does not depend on pixel content, so synthetic tiles stand in for real ones. The first
epoch of each phase includes tracing; the figures are the later epochs. The machine may be
shared, so CPU seconds (all threads of this process) are printed beside wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    base = yaml.safe_load((ROOT / "conf/base/parameters.yml").read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=512, help="training tiles")
    parser.add_argument("--validation", type=int, default=256, help="validation tiles")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per phase (>= 2: the first traces)")
    parser.add_argument("--backbone", default=params["backbone"])
    parser.add_argument("--weights", default=params["weights"])
    parser.add_argument("--batch-size", type=int, default=params["batch_size"])
    parser.add_argument("--fine-tune-blocks", type=int, default=params["fine_tune_blocks"])
    args = parser.parse_args()

    import keras

    from landuse_kedro.models import build_classifier, unfreeze_top
    from landuse_kedro.pipelines.training.inputs import TileArrays, make_dataset

    size = base["scoring"]["image_size"]
    classes = len(base["land_cover"]["classes"])
    rng = np.random.default_rng(0)

    def tiles(n: int) -> TileArrays:
        return TileArrays(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                          rng.integers(0, classes, n).astype(np.int32), tuple(map(str, range(n))))

    train, validation = tiles(args.tiles), tiles(args.validation)
    train_data = make_dataset(train, args.batch_size, 0, params["augmentation"])
    keras.utils.set_random_seed(0)
    model = build_classifier(args.backbone, args.weights, classes, size, params["dropout"])

    def epoch_seconds(learning_rate: float) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each epoch."""
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        seconds = []
        for _ in range(args.epochs):
            start, cpu = time.perf_counter(), time.process_time()
            model.fit(train_data, epochs=1, verbose=0)
            seconds.append((time.perf_counter() - start, time.process_time() - cpu))
        return seconds

    head = epoch_seconds(params["learning_rate"])
    model.predict(validation.images[: args.batch_size], batch_size=args.batch_size, verbose=0)  # trace
    start, cpu = time.perf_counter(), time.process_time()
    model.predict(validation.images, batch_size=args.batch_size, verbose=0)
    predict_wall, predict_cpu = time.perf_counter() - start, time.process_time() - cpu
    unfreeze_top(model, args.fine_tune_blocks)
    tuned = epoch_seconds(params["fine_tune_learning_rate"])

    print(f"backbone {args.backbone} (weights {args.weights}), batch {args.batch_size}, "
          f"{len(train)} training tiles {size}x{size}, {os.cpu_count()} CPUs")
    for name, seconds in (("head only (backbone frozen)", head),
                          (f"fine-tuning top {args.fine_tune_blocks} blocks", tuned)):
        wall, cpu = np.mean(seconds[1:] or seconds, axis=0)
        print(f"  {name}: {wall:.1f} s/epoch = {len(train) / wall:.0f} training images/s; "
              f"{cpu:.1f} CPU s/epoch = {1000 * cpu / len(train):.0f} CPU ms/image "
              f"(first epoch, with tracing: {seconds[0][0]:.1f} s)")
    print(f"  validation (model.predict): {len(validation) / predict_wall:.0f} images/s on {len(validation)} tiles; "
          f"{1000 * predict_cpu / len(validation):.1f} CPU ms/image")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
