"""ModelFileDataset saves atomically (issue 28): a save killed midway leaves the previous version the
one every reader loads."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from kedro.io.core import Version
from onnx import TensorProto, helper, numpy_helper

from landuse_kedro.datasets import ModelArtifact, ModelFileDataset


def onnx_model(values: int) -> ModelArtifact:
    """An ONNX graph adding a constant of ``values`` floats: its size is chosen by the test."""
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [values]) for name in "xy")
    constant = numpy_helper.from_array(np.arange(values, dtype=np.float32), "c")
    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "add", [x], [y], [constant])
    return ModelArtifact("onnx", helper.make_model(graph).SerializeToString())


KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from fsspec.implementations.local import LocalFileOpener
    from kedro.io.core import Version
    from landuse_kedro.datasets import ModelFileDataset
    from tests.datasets.test_model_file import onnx_model

    def write_half_then_die(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or `kill -9` would, mid-write

    LocalFileOpener.write = write_half_then_die
    ModelFileDataset(filepath=sys.argv[1], version=Version(None, None)).save(onnx_model(4_000_000))
    """
)


def test_a_save_killed_mid_write_leaves_the_previous_version_loaded(tmp_path: Path) -> None:
    filepath = tmp_path / "06_models" / "scoring_model.onnx"
    previous = onnx_model(10)
    ModelFileDataset(filepath=str(filepath), version=Version(None, None)).save(previous)
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, str(filepath)], cwd=root, capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    versions = sorted(filepath.iterdir())
    assert len(versions) == 2  # the killed save did begin a newer version folder, with half a model in it
    written = [path for path in versions[-1].iterdir() if path.stat().st_size > 0]
    assert written and written[0].stat().st_size < len(onnx_model(4_000_000).payload)
    for optional in (False, True):  # training's previous_scoring_model is the optional reader
        reader = ModelFileDataset(filepath=str(filepath), version=Version(None, None), optional=optional)
        assert reader.load() == previous
