"""The int8 export: a calibrated, per-channel QDQ graph whose float head keeps real probabilities,
close to the fp32 model; models say their own precision; CPU flags are read from /proc/cpuinfo."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.models.onnx_export import artifact_to_onnx, keras_to_artifact, keras_to_onnx
from landuse_kedro.models.predictor import load_predictor
from landuse_kedro.models.quantize import calibration_sample, cpu_flags, quantize_onnx

SIZE = 32


def tiles(n: int, seed: int) -> np.ndarray:
    """Smooth random colour fields with noise: varied activations for calibration and testing."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.integers(30, 220, (n, 1, 1, 3)) + 40 * np.sin(6 * x + rng.random((n, 1, 1)) * 6)[..., None]
    return np.clip(base + rng.normal(0, 15, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def keras_model():
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(24, 1, activation="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        6, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=2.0)
    )(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models(keras_model) -> dict[str, ModelArtifact]:
    fp32 = keras_to_onnx(keras_model)
    return {"fp32": fp32, "int8": quantize_onnx(fp32, tiles(48, seed=1))}


def test_models_say_their_precision(models, keras_model) -> None:
    assert models["fp32"].precision == "fp32"
    assert models["int8"].precision == "int8"
    assert keras_to_artifact(keras_model).precision == "fp32"


def test_int8_is_a_qdq_graph_with_per_channel_conv_weights_and_a_float_head(models) -> None:
    graph = onnx.load_model_from_string(models["int8"].payload).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ format, not QLinear operators
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {
        node.input[0]: initializers[node.input[1]]
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[0] in initializers
        and initializers[node.input[0]].dtype == np.int8
    }
    conv_inputs = {name for node in graph.node if node.op_type == "Conv" for name in node.input}
    dequantized_conv_weights = {
        node.input[0]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.output[0] in conv_inputs and node.input[0] in weights
    }
    assert len(dequantized_conv_weights) == 3  # every conv runs on int8 weights ...
    for name in dequantized_conv_weights:  # ... with one scale per output channel
        assert weights[name].size == initializers[name].shape[0] > 1
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    assert not any(
        node.op_type == "QuantizeLinear" and node.input[0] == softmax.output[0] for node in graph.node
    )


def test_int8_predictions_stay_close_to_fp32(models) -> None:
    images = tiles(64, seed=2)  # not the calibration tiles
    fp32, int8 = (load_predictor("onnx", models[p].payload, threads=1)(images) for p in ("fp32", "int8"))
    assert len(set(fp32.argmax(axis=1))) > 2  # else agreement would prove little
    np.testing.assert_allclose(int8.sum(axis=1), 1.0, atol=1e-5)  # real probabilities, not 1/255 steps
    assert np.abs(int8 - fp32).max() < 0.1
    assert np.mean(int8.argmax(axis=1) == fp32.argmax(axis=1)) >= 0.9


def test_a_keras_artifact_is_converted_before_quantisation(keras_model, models) -> None:
    converted = artifact_to_onnx(keras_to_artifact(keras_model))
    assert converted.format == "onnx"
    images = tiles(8, seed=3)
    np.testing.assert_allclose(
        load_predictor("onnx", converted.payload, 1)(images),
        load_predictor("onnx", models["fp32"].payload, 1)(images),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="needs an ONNX model"):
        quantize_onnx(keras_to_artifact(keras_model), tiles(4, seed=4))
    with pytest.raises(ValueError, match="at least one tile"):
        quantize_onnx(models["fp32"], tiles(0, seed=4))


def test_calibration_sample_is_seeded_sorted_and_without_repeats() -> None:
    sample = calibration_sample(100, 10, seed=1)
    assert len(set(sample)) == 10 and list(sample) == sorted(sample) and sample.max() < 100
    np.testing.assert_array_equal(calibration_sample(100, 10, seed=1), sample)
    assert not np.array_equal(calibration_sample(100, 10, seed=2), sample)
    np.testing.assert_array_equal(calibration_sample(5, 10, seed=1), np.arange(5))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\n"
        "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
    )
    assert cpu_flags(cpuinfo) == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False}
    assert not any(cpu_flags(tmp_path / "missing").values())
