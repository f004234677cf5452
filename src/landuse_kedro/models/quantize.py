"""Calibrated int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel weights) of the fp32 export.

Why static and not dynamic: dynamic quantisation leaves convolutions in float and was measured slower than
fp32 on EfficientNet-Lite0; static quantisation fixes every activation's range from calibration tiles, so the
convolutions run on integer kernels (VNNI where the CPU has it). Uint8 activations with int8 weights is ONNX
Runtime's recommended layout for x86 CPUs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from landuse_kedro.datasets.model_file import ModelArtifact

HEAD_OPS = frozenset({"GlobalAveragePool", "Squeeze", "Reshape", "Flatten", "MatMul", "Gemm", "Softmax"})
"""The classifier head stays float: a few thousand multiply-adds, and a quantised softmax would round
probabilities to steps of 1/255 (ties for the top class, probabilities that do not sum to 1)."""

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
"""What int8 and fp32 speed depend on: AVX2 and AVX-512 widths, VNNI's 8-bit dot products."""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool]:
    """Which of :data:`CPU_FLAGS` this machine has (all False where /proc/cpuinfo is missing)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return dict.fromkeys(CPU_FLAGS, False)
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return {flag: flag in flags for flag in CPU_FLAGS}


def describe_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``avx2 yes, avx512f no, ...`` for benchmark headers."""
    return ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in cpu_flags(cpuinfo).items())


def calibration_sample(n_tiles: int, wanted: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``wanted`` of ``n_tiles`` tiles (all of them if fewer)."""
    if wanted >= n_tiles:
        return np.arange(n_tiles)
    return np.sort(np.random.default_rng(seed).choice(n_tiles, size=wanted, replace=False))


def quantize_onnx(model: ModelArtifact, calibration_images: np.ndarray, batch_size: int = 4) -> ModelArtifact:
    """The int8 QDQ model of an fp32 ONNX ``model`` (uint8 image input), activation ranges calibrated
    (min-max) on ``calibration_images`` (N, H, W, 3) uint8. ONNX Runtime's quantiser works on files,
    hence the temporary folder. ``batch_size`` bounds the calibration's memory (ONNX Runtime's calibration
    session took about 110 MB per image of a batch: 16 images peaked 2.1 GB, 4 images 0.8 GB) and not its
    result: min-max ranges are the same whatever the batches (checked: the same int8 bytes for 4 and 16)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if model.format != "onnx":
        raise ValueError(f"int8 quantisation needs an ONNX model, got {model.format}.")
    if len(calibration_images) == 0:
        raise ValueError("int8 calibration needs at least one tile.")
    input_name = onnx.load_model_from_string(model.payload).graph.input[0].name

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {input_name: calibration_images[i : i + batch_size]}
                for i in range(0, len(calibration_images), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as folder:
        fp32, prepared, int8 = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(model.payload)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # folds, infers shapes (ONNX)
        head = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type in HEAD_OPS]
        quantize_static(
            str(prepared),
            str(int8),
            Tiles(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,  # keeps only each tensor's min and max per batch
            nodes_to_exclude=head,
        )
        return ModelArtifact("onnx", int8.read_bytes())
