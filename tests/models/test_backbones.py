"""build_classifier's contract (uint8 in, probabilities out, portable .keras file) and fine-tuning
controls."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from landuse_kedro.models.backbones import (
    MID_LEVEL_OUTPUTS,
    backbone_blocks,
    build_classifier,
    features_and_head,
    flip_first_conv_to_rgb,
    num_parameters,
    unfreeze_top,
)


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    return build_classifier()  # efficientnet_lite0, shipped ImageNet weights, 6 classes, 224


POOLED = 40 + 80 + 1280  # Lite0's block04 and block07 outputs, then its top feature map


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)


def test_input_contract(classifier, tiles):
    assert classifier.input.dtype == "uint8"
    assert tuple(classifier.input.shape) == (None, 224, 224, 3)
    probabilities = classifier.predict_on_batch(tiles)
    assert probabilities.shape == (5, 6)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_preprocessing_is_baked_in(classifier):
    preprocess = classifier.get_layer("preprocess")
    assert isinstance(preprocess, keras.layers.Rescaling)
    out = keras.ops.convert_to_numpy(preprocess(np.array([[[[0, 127, 255]]]], dtype=np.uint8)))
    np.testing.assert_allclose(out.ravel(), [-127 / 128, 0.0, 128 / 128], atol=1e-6)


def test_backbone_is_frozen_and_imagenet_loaded(classifier):
    base = classifier.get_layer("backbone")
    assert isinstance(base, keras.Model) and not base.trainable
    assert num_parameters(classifier)["trainable"] == POOLED * 6 + 6  # only the new head
    reference = keras.ops.convert_to_numpy(base.get_layer("stem_conv").kernel)
    assert np.abs(reference).max() > 1.0  # ImageNet stem, not a glorot init (|w| < 0.3 at fan-in 27)


def test_the_classifier_cut_at_its_pooled_features_is_the_classifier(classifier, tiles):
    """Training the head on cached features trains the classifier: the two halves compose to it and
    the head's weights are the classifier's own variables, not copies."""
    features, head = features_and_head(classifier)
    pooled = features.predict_on_batch(tiles)
    assert pooled.shape == (5, POOLED)
    np.testing.assert_allclose(
        head.predict_on_batch(pooled), classifier.predict_on_batch(tiles), rtol=1e-5, atol=1e-6
    )
    assert [id(w) for w in head.trainable_weights] == [id(w) for w in classifier.trainable_weights]


def test_pooled_features_are_the_mid_level_maps_then_the_top_map_averaged(classifier, tiles):
    """Recomputed from the backbone's own layers, outside the classifier's graph."""
    base = classifier.get_layer("backbone")
    names = [*MID_LEVEL_OUTPUTS["efficientnet_lite0"], "head_relu"]
    maps = keras.Model(base.inputs, [base.get_layer(name).output for name in names])
    preprocessed = classifier.get_layer("preprocess")(tiles)
    expected = np.concatenate(
        [keras.ops.convert_to_numpy(m).mean(axis=(1, 2)) for m in maps(preprocessed)], axis=1
    )
    assert [m.shape[1:3] for m in maps.outputs] == [(28, 28), (14, 14), (7, 7)]  # stride 8, 16, 32
    pooled = features_and_head(classifier)[0].predict_on_batch(tiles)
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(pooled[:, :120]).max() > 0.1  # the mid-level part carries signal


def test_without_mid_level_features_the_head_sees_the_top_map_only(tiles):
    top_only = build_classifier(image_size=64, mid_level_features=False)
    assert features_and_head(top_only)[0].output.shape == (None, 1280)
    assert num_parameters(top_only)["trainable"] == 1280 * 6 + 6


def test_save_load_round_trip_needs_no_custom_objects(classifier, tiles, tmp_path):
    path = tmp_path / "classifier.keras"
    classifier.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict_on_batch(tiles), classifier.predict_on_batch(tiles))
    assert not loaded.get_layer("backbone").trainable


def test_unfreeze_top_blocks_keeps_batchnorm_frozen(classifier):
    try:
        unfrozen = unfreeze_top(classifier, 2)
        assert unfrozen == [
            "block14_expand_conv",
            "block14_dw_conv",
            "block14_project_conv",
            "block15_expand_conv",
            "block15_dw_conv",
            "block15_project_conv",
            "head_conv",
        ]
        base = classifier.get_layer("backbone")
        assert all(
            not layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
        )
        assert not base.get_layer("block13_project_conv").trainable
        with pytest.raises(ValueError, match="between 0 and 16"):
            unfreeze_top(classifier, 17)
    finally:
        unfreeze_top(classifier, 0)
    assert num_parameters(classifier)["trainable"] == POOLED * 6 + 6


def test_fine_tuning_moves_top_weights_but_not_batchnorm_statistics():
    model = build_classifier(num_classes=3, image_size=96)  # random weights saturate ReLU6: zero gradients
    unfreeze_top(model, 1)
    base = model.get_layer("backbone")
    before = {
        name: [np.array(w) for w in base.get_layer(name).get_weights()]
        for name in ("block15_project_conv", "block15_project_bn", "block14_project_conv")
    }
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).integers(0, 256, size=(8, 96, 96, 3), dtype=np.uint8)
    model.fit(x, np.arange(8) % 3, batch_size=8, epochs=1, verbose=0)
    after = {name: base.get_layer(name).get_weights() for name in before}
    assert not np.array_equal(after["block15_project_conv"][0], before["block15_project_conv"][0])
    for old, new in zip(before["block15_project_bn"], after["block15_project_bn"], strict=True):
        np.testing.assert_array_equal(new, old)  # gamma, beta, moving mean/var untouched
    np.testing.assert_array_equal(after["block14_project_conv"][0], before["block14_project_conv"][0])


@pytest.mark.parametrize(
    "backbone, preprocess_type, n_blocks",
    [
        ("mobilenet_v2", keras.layers.Rescaling, 17),
        ("resnet50", keras.layers.Normalization, 16),
    ],
)
def test_keras_applications_from_scratch(backbone, preprocess_type, n_blocks):
    model = build_classifier(backbone, weights="none", num_classes=4, image_size=32)
    assert isinstance(model.get_layer("preprocess"), preprocess_type)
    assert len(backbone_blocks(model)) == n_blocks
    base = model.get_layer("backbone")
    mid_level = [base.get_layer(name).output.shape[1] for name in MID_LEVEL_OUTPUTS[backbone]]
    assert mid_level == [32 // 8, 32 // 16]  # the taps sit at stride 8 and 16 in every backbone
    x = np.random.default_rng(2).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict_on_batch(x).sum(axis=1), 1.0, atol=1e-5)


def test_resnet_rgb_input_equals_keras_bgr_preprocessing():
    """Normalization(RGB means) + flipped first conv == keras' caffe preprocess_input on the original net."""
    model = build_classifier("resnet50", weights="none", image_size=32, mid_level_features=False)
    base = model.get_layer("backbone")
    x = np.random.default_rng(3).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(
        base(keras.applications.resnet50.preprocess_input(x.astype(np.float32)))
    )
    flip_first_conv_to_rgb(base)
    features = keras.ops.convert_to_numpy(base(model.get_layer("preprocess")(x)))
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_imagenet_download_failure_is_explained(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: Name or service not known")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="needs internet.*efficientnet_lite0"):
        build_classifier("mobilenet_v2", weights="imagenet", image_size=96)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "vgg16"}, "efficientnet_lite0, mobilenet_v2, resnet50"),
        ({"weights": "noisy_student"}, "imagenet, none"),
        ({"num_classes": 1}, "at least 2"),
    ],
)
def test_bad_arguments_list_the_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_classifier(**kwargs)


def test_weights_none_is_accepted_as_null():
    model = build_classifier(weights=None, image_size=32, num_classes=2)
    assert model.output_shape == (None, 2)


def test_weights_none_trains_the_whole_network_from_scratch():
    from_scratch = build_classifier("efficientnet_lite0", weights="none", num_classes=3, image_size=64)
    counts = num_parameters(from_scratch)
    assert from_scratch.get_layer("backbone").trainable
    assert counts["trainable"] > 0.9 * counts["total"]  # backbone included, not just the head
