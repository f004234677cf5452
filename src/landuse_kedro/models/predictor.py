"""Model bytes -> a predict function (ONNX Runtime or Keras), cached per Python worker, and the batched
loop's read-ahead: what scoring, the window jobs, the feature job and training share to run a model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from landuse_kedro.datasets.model_file import ModelArtifact, ModelFormat

Predictor = Callable[[np.ndarray], np.ndarray]
"""(N, H, W, 3) uint8 RGB -> (N, outputs): class probabilities, or features."""


def load_predictor(model_format: ModelFormat, payload: bytes, threads: int) -> Predictor:
    """Build a predictor from a model file's bytes; ``threads`` caps the runtime's CPU threads,
    since Spark already runs one Python worker per core."""
    if model_format == "onnx":
        return _onnx_predictor(payload, threads)
    if model_format == "keras":
        return _keras_predictor(payload, threads)
    raise ValueError(f"Unknown model format '{model_format}': expected 'onnx' or 'keras'.")


def predict_classes(predict: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class indices of ``images``, predicted ``batch_size`` at a time (one batch of activations in
    memory, not the whole set's)."""
    return np.concatenate(
        [predict(images[i : i + batch_size]).argmax(axis=1) for i in range(0, len(images), batch_size)]
    )


def _onnx_predictor(payload: bytes, threads: int) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads otherwise spin for work, burning cores that other workers need: with 2
    # threads on a busy 2-core machine, EfficientNet-Lite0 ran at 120 images/s without, 85-94 with.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    dtype = np.uint8 if model_input.type == "tensor(uint8)" else np.float32

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run(None, {model_input.name: images.astype(dtype, copy=False)})[0]

    return predict


def _keras_predictor(payload: bytes, threads: int) -> Predictor:
    import tensorflow as tf

    from landuse_kedro.models.onnx_export import artifact_to_keras

    try:  # only possible before TensorFlow's runtime starts; a worker that already ran TF keeps its own
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    model = artifact_to_keras(payload)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(images))

    return predict


_PREDICTORS: dict[tuple[str, int], Predictor] = {}


def cached_predictor(
    key: str, model_format: ModelFormat, payload: Callable[[], bytes], threads: int
) -> Predictor:
    """One predictor per Python worker process and model: Spark reuses workers across tasks, so a
    model is deserialized once, not once per partition. ``payload`` is only called on a miss (it
    fetches the broadcast). A worker keeps one model at a time: executors' memory is small."""
    if (key, threads) not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[(key, threads)] = load_predictor(model_format, payload(), threads)
    return _PREDICTORS[(key, threads)]


def model_key(model: ModelArtifact) -> str:
    return hashlib.sha256(model.payload).hexdigest()


@dataclass(frozen=True)
class ShippedModel:
    """A model on its way to the workers: ``payload`` is anything with ``.value`` (a Spark broadcast of the
    model's bytes), read only by a worker that has not loaded the model yet."""

    key: str
    format: ModelFormat
    payload: Any  # pyspark Broadcast[bytes]

    def predictor(self, threads: int) -> Predictor:
        return cached_predictor(self.key, self.format, lambda: self.payload.value, threads)


def prefetched(
    items: Iterable[Any],
    prepare: Callable[[Any], Any],
    enabled: bool,
    finish: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """``prepare`` the next item in a background thread while the caller works on the current one
    (PIL decoding and file reads release the GIL, so this overlaps with inference); ``finish``
    runs last in the thread that prepared (GDAL environments must close where they opened)."""
    if not enabled:
        try:
            yield from map(prepare, items)
        finally:
            if finish is not None:
                finish()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = None
            for item in items:
                future = pool.submit(prepare, item)
                if pending is not None:
                    yield pending.result()
                pending = future
            if pending is not None:
                yield pending.result()
        finally:
            if finish is not None:
                pool.submit(finish).result()
