"""A Keras model as a :class:`ModelArtifact`: ONNX (what Spark workers score with, about 1.5-3x
faster than Keras on CPU) or the ``.keras`` file itself.

``tf2onnx.convert.from_keras`` fails on Keras 3, so the model is wrapped in a ``tf.function`` with
an explicit input signature and converted with ``from_function``; the ``TensorSpec`` handed to
tf2onnx must be the same (same name) as the function's own, or tf2onnx refuses to cast it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from landuse_kedro.datasets.model_file import ModelArtifact

if TYPE_CHECKING:
    import keras

ONNX_OPSET = 17
INPUT_NAME = "image"


def keras_to_onnx(model: keras.Model, opset: int = ONNX_OPSET) -> ModelArtifact:
    """Convert ``model`` (one image input, any batch size) to ONNX; input keeps the model's dtype."""
    import tensorflow as tf
    import tf2onnx

    if len(model.inputs) != 1:
        raise ValueError(f"keras_to_onnx expects a model with one input, got {len(model.inputs)}.")
    model_input = model.inputs[0]
    signature = [
        tf.TensorSpec((None, *model_input.shape[1:]), tf.as_dtype(model_input.dtype), name=INPUT_NAME)
    ]

    @tf.function(input_signature=signature)
    def serve(image):
        return model(image, training=False)

    try:
        with _optimizers_in_place():
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    except Exception:  # an optimizer failed in place: convert again, skipping the failing optimizer
        release_freed_memory()
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    artifact = ModelArtifact("onnx", proto.SerializeToString())
    del proto, serve
    release_freed_memory()
    return artifact


@contextmanager
def _optimizers_in_place() -> Iterator[None]:
    """tf2onnx deep-copies the whole graph before each of its optimizer passes (about 36 for
    EfficientNet-Lite0), so that a failing pass can be skipped, unless ``TF2ONNX_CATCH_ERRORS`` is set:
    the copies raised the driver's peak by about 500 MB (2,044 -> 1,518 MB, Lite0's features). tf2onnx
    1.17 tests that the variable exists, not its value. Set only for the conversion."""
    name = "TF2ONNX_CATCH_ERRORS"
    before = os.environ.get(name)
    os.environ[name] = "FALSE"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def release_freed_memory() -> None:
    """Hand the heap that a conversion freed back to the operating system. tf2onnx builds about 1 GB of
    short-lived Python objects for EfficientNet-Lite0; glibc keeps freed heap pages resident, so without
    this the training driver carried them into every later node (measured: 1,966 MB resident after a
    conversion, 925 MB after the trim). Elsewhere than glibc it does nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def keras_to_artifact(model: keras.Model) -> ModelArtifact:
    """The model's ``.keras`` file as bytes (Keras only saves to a path, hence the temp folder)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return ModelArtifact("keras", path.read_bytes())


def artifact_to_keras(payload: bytes) -> keras.Model:
    """The Keras model of a ``.keras`` file's bytes, uncompiled (the reverse of :func:`keras_to_artifact`)."""
    import keras

    with tempfile.TemporaryDirectory() as folder:  # Keras loads only from a path
        path = Path(folder) / "model.keras"
        path.write_bytes(payload)
        return keras.models.load_model(path, compile=False)


def artifact_to_onnx(model: ModelArtifact) -> ModelArtifact:
    """``model`` as ONNX: itself, or its ``.keras`` file converted (so int8 export works whatever
    ``scoring.backend`` exported)."""
    if model.format == "onnx":
        return model
    return keras_to_onnx(artifact_to_keras(model.payload))
