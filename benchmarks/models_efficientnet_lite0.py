"""Prints the EfficientNet-Lite0 port's costs: .pth parse, model build, parameters, predict images/s,
logit error, and what the mid-level features (``training.mid_level_features``) cost in ONNX scoring.

Run: .venv/bin/python benchmarks/models_efficientnet_lite0.py [--batch 64 --threads 2 --repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "efficientnet_lite0_golden"


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import skimage.data
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from landuse_kedro.models import build_classifier, efficientnet_lite0, imagenet_weights_path
    from landuse_kedro.models.torch_weights import read_torch_state_dict

    state, parse_s = _timed(lambda: read_torch_state_dict(imagenet_weights_path()))
    imagenet, build_s = _timed(lambda: efficientnet_lite0(include_top=True))
    classifier, classifier_s = _timed(build_classifier)
    print(f"parse .pth: {parse_s:.3f} s ({len(state)} tensors)")
    print(
        f"build Lite0 + ImageNet weights (1000 classes): {build_s:.2f} s, "
        f"{imagenet.count_params():,} parameters"
    )
    print(f"build_classifier() (6 classes): {classifier_s:.2f} s, {classifier.count_params():,} parameters")

    golden = json.loads((GOLDEN_DIR / "golden.json").read_text())
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    names = list(golden["images"])
    pixels = np.stack([make_golden.reference_input(getattr(skimage.data, n)()) for n in names])
    logits = imagenet.predict_on_batch((pixels.astype(np.float32) - 127.0) / 128.0)
    reference = np.array([golden["images"][n]["logits"] for n in names], dtype=np.float32)
    print(f"max |Keras - PyTorch| logit: {np.abs(logits - reference).max():.2e} over {len(names)} images")

    tiles = np.random.default_rng(0).integers(0, 256, size=(args.batch, 224, 224, 3), dtype=np.uint8)
    runners = {
        "model.predict": lambda: classifier.predict(tiles, batch_size=args.batch, verbose=0),
        "predict_on_batch": lambda: classifier.predict_on_batch(tiles),
    }
    for label, run in runners.items():
        run()  # trace / warm up
        times = [_timed(run)[1] for _ in range(args.repeats)]
        print(
            f"{label:>17}: {args.batch / np.median(times):6.1f} images/s median "
            f"(best {args.batch / min(times):.1f}), batch {args.batch}, {args.threads} threads"
        )

    mid_level_cost(tiles, args.threads, args.repeats)


def mid_level_cost(tiles, threads: int, repeats: int) -> None:
    """ONNX Runtime images/s of the classifier with and without the mid-level features, the two
    timed in turn within each repeat so that a neighbour's load falls on both."""
    import numpy as np

    from landuse_kedro.models import build_classifier
    from landuse_kedro.models.onnx_export import keras_to_onnx
    from landuse_kedro.models.predictor import load_predictor

    predictors = {
        mid_level: load_predictor(
            "onnx", keras_to_onnx(build_classifier(mid_level_features=mid_level)).payload, threads
        )
        for mid_level in (False, True)
    }
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats + 1):  # the first round warms up
        for mid_level, predict in predictors.items():
            times[mid_level].append(_timed(lambda: predict(tiles))[1])
    rates = {k: len(tiles) / np.median(v[1:]) for k, v in times.items()}
    print(
        f"ONNX, top features only {rates[False]:.1f} images/s, mid-level + top {rates[True]:.1f} images/s "
        f"({rates[True] / rates[False]:.3f}x), batch {len(tiles)}, {threads} threads"
    )


if __name__ == "__main__":
    main()
