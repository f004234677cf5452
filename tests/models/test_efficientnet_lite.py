"""The Keras EfficientNet-Lite0 port: architecture, real photos, and logits equal to the PyTorch reference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data

from landuse_kedro.models.efficientnet_lite import (
    NUM_BLOCKS,
    efficientnet_lite0,
    imagenet_weights_path,
    load_torch_weights,
)
from landuse_kedro.models.torch_weights import read_torch_state_dict

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "efficientnet_lite0_golden"
# ImageNet-1k ids: tabby / tiger cat / Egyptian cat; espresso / cup / coffee mug.
EXPECTED = {"chelsea": {281, 282, 285}, "coffee": {967, 968, 504}}


def _golden_module():
    """The script that made the golden logits holds the one definition of the image preprocessing."""
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN_DIR / "golden.json").read_text())


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return efficientnet_lite0(include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def logits(model) -> dict[str, np.ndarray]:
    """Keras logits for the two photos, preprocessed exactly as for the golden file, plus their pixel
    hashes."""
    make_golden = _golden_module()
    images = {name: make_golden.reference_input(getattr(skimage.data, name)()) for name in EXPECTED}
    batch = (np.stack(list(images.values())).astype(np.float32) - 127.0) / 128.0
    out = model.predict_on_batch(batch)
    return {
        name: (row, make_golden.pixels_sha256(images[name])) for name, row in zip(images, out, strict=True)
    }


def test_architecture_matches_the_weights_file(model):
    state = read_torch_state_dict(imagenet_weights_path())
    assert model.count_params() == sum(a.size for a in state.values())  # 4.69 M: every tensor used once
    blocks = {layer.name[:7] for layer in model.layers if layer.name.startswith("block")}
    assert len(blocks) == NUM_BLOCKS == 16
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 9
    assert not any("swish" in str(layer.get_config().get("activation", "")) for layer in model.layers)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.epsilon == 1e-3 for layer in bns)
    assert model.output_shape == (None, 1000)


def test_weights_are_mapped_by_name(model):
    state = read_torch_state_dict(imagenet_weights_path())
    np.testing.assert_array_equal(
        model.get_layer("block00_dw_bn").get_weights()[2], state["_blocks.0._bn1.running_mean"]
    )
    np.testing.assert_array_equal(
        model.get_layer("block03_dw_conv").get_weights()[0][:, :, 5, 0],
        state["_blocks.3._depthwise_conv.weight"][5, 0],
    )
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0], state["_fc.weight"].T)


def test_missing_tensor_is_named():
    state = read_torch_state_dict(imagenet_weights_path())
    del state["_blocks.7._bn2.running_var"]
    headless = efficientnet_lite0((64, 64, 3), weights=None)
    with pytest.raises(KeyError, match=r"_blocks\.7\._bn2\.running_var"):
        load_torch_weights(headless, state)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_photos_land_in_the_right_imagenet_classes(logits, name):
    top5 = set(np.argsort(-logits[name][0])[:5].tolist())
    assert top5 & EXPECTED[name], f"{name}: top-5 {sorted(top5)} has none of {sorted(EXPECTED[name])}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logits_match_the_pytorch_reference(logits, golden, name):
    row, pixels_sha = logits[name]
    reference = golden["images"][name]
    assert pixels_sha == reference["input_sha256"], "the Keras side did not see the golden script's pixels"
    diff = np.abs(row - np.asarray(reference["logits"], dtype=np.float32)).max()
    assert diff < 1e-3, f"{name}: max |Keras - PyTorch| logit difference {diff:.2e}"
