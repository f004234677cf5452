"""The legacy .pth reader: the real shipped file, strided/shared storages, and refusal of anything else."""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from landuse_kedro.models.efficientnet_lite import imagenet_weights_path
from landuse_kedro.models.torch_weights import (
    LEGACY_MAGIC,
    SUPPORTED_PROTOCOL,
    TorchWeightsError,
    read_torch_state_dict,
)


@pytest.fixture(scope="module")
def shipped() -> Path:
    return imagenet_weights_path()


def _header() -> bytes:
    return b"".join(
        pickle.dumps(obj, protocol=2)
        for obj in (
            LEGACY_MAGIC,
            SUPPORTED_PROTOCOL,
            {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
        )
    )


def write_legacy(
    path: Path,
    tensors: dict[str, tuple[str, int, tuple, tuple]],
    storages: dict[str, np.ndarray],
    monkeypatch,
) -> None:
    """Write a file the way torch.save's legacy path does, using stand-in torch modules (torch is not
    installed).

    ``tensors``: name -> (storage key, offset, shape, stride); ``storages``: key -> flat float32/int64 data.
    """
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # only its importable name matters for pickling
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        storage_types[name] = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, storage_types[name])
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class StorageRef:
        def __init__(self, key):
            self.key = key

    class TensorRef:
        def __init__(self, key, offset, shape, stride):
            self.args = (StorageRef(key), offset, shape, stride, False, OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, StorageRef):
                data = storages[obj.key]
                kind = "FloatStorage" if data.dtype == np.float32 else "LongStorage"
                return ("storage", storage_types[kind], obj.key, "cpu", data.size, None)
            return None

    body = io.BytesIO()
    Pickler(body, protocol=2).dump(OrderedDict((n, TensorRef(*spec)) for n, spec in tensors.items()))
    keys = list(storages)
    with path.open("wb") as f:
        f.write(_header() + body.getvalue() + pickle.dumps(keys, protocol=2))
        for key in keys:
            data = storages[key]
            f.write(np.int64(data.size).tobytes() + data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_shipped_file_has_the_lite0_tensors(shipped):
    everything = read_torch_state_dict(shipped, skip_suffixes=())
    weights = read_torch_state_dict(shipped)
    counters = [name for name in everything if name.endswith("num_batches_tracked")]
    assert len(everything) == 296
    assert len(counters) == 49
    assert set(weights) == set(everything) - set(counters)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in weights  # block 0 has expand ratio 1
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in weights.values())
    assert all((a >= 0).all() for name, a in weights.items() if name.endswith("running_var"))
    assert everything[counters[0]].dtype == np.int64


def test_strided_and_shared_storages(tmp_path, monkeypatch):
    base = np.arange(12, dtype=np.float32)
    path = tmp_path / "synthetic.pth"
    write_legacy(
        path,
        {
            "matrix": ("0", 0, (3, 4), (4, 1)),
            "transposed": ("0", 0, (4, 3), (1, 4)),  # a .T view of the same storage
            "tail": ("0", 8, (2, 2), (2, 1)),  # offset into it
            "steps": ("1", 0, (), ()),  # a 0-d int64 tensor
        },
        {"0": base, "1": np.array([7], dtype=np.int64)},
        monkeypatch,
    )
    arrays = read_torch_state_dict(path)
    np.testing.assert_array_equal(arrays["matrix"], base.reshape(3, 4))
    np.testing.assert_array_equal(arrays["transposed"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(arrays["tail"], base[8:].reshape(2, 2))
    assert arrays["steps"].shape == () and arrays["steps"] == 7
    arrays["matrix"][0, 0] = 99  # copies, not views into the file buffer
    assert arrays["transposed"][0, 0] == 0


def test_foreign_global_is_refused_not_executed(tmp_path):
    evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    path = tmp_path / "evil.pth"
    path.write_bytes(_header() + evil)
    with pytest.raises(TorchWeightsError, match=r"refusing global os\.system"):
        read_torch_state_dict(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"PK\x03\x04 this is a zip archive", "zip format"),
        (b"\x00\x01garbage bytes that are not a pickle", "magic number"),
        (pickle.dumps({"weights": [1, 2, 3]}, protocol=2), "not a PyTorch legacy file"),
        (b"", "magic number"),
    ],
)
def test_foreign_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "foreign.pth"
    path.write_bytes(content)
    with pytest.raises(TorchWeightsError, match=message):
        read_torch_state_dict(path)


def test_truncated_file_is_a_clear_error(tmp_path, shipped):
    data = shipped.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[:-1000])
    with pytest.raises(TorchWeightsError, match="file ends inside storage"):
        read_torch_state_dict(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(TorchWeightsError, match="unexpected bytes after the last storage"):
        read_torch_state_dict(path)


@pytest.mark.parametrize(
    "layout, message",
    [
        (("0", 11, (3,), (-4,)), r"'bad': negative stride in \(-4,\)"),  # would read before the buffer
        (("0", 0, (4, 3), (0, 1)), r"'bad': zero stride in \(0, 1\)"),  # a broadcast view
        (("0", 0, (2**20, 2**20), (1, 1)), r"'bad': 1099511627776 elements exceed the cap of 100000000"),
        (
            ("0", 4, (3, 3), (3, 1)),
            r"'bad': offset 4 .* reaches element 12, past the end of its storage "
            r"of 12 elements",
        ),
        (("0", 12, (), ()), "past the end of its storage"),  # a 0-d tensor after the end
        (("0", -1, (2,), (1,)), "offset -1"),
    ],
)
def test_layouts_outside_the_storage_are_refused(tmp_path, monkeypatch, layout, message):
    path = tmp_path / "crafted.pth"
    good = ("0", 0, (3, 4), (4, 1))
    write_legacy(path, {"good": good, "bad": layout}, {"0": np.arange(12, dtype=np.float32)}, monkeypatch)
    with pytest.raises(TorchWeightsError, match=message):
        read_torch_state_dict(path)


def test_the_largest_layout_inside_the_storage_still_loads(tmp_path, monkeypatch):
    path = tmp_path / "edge.pth"
    write_legacy(
        path,
        {"last": ("0", 11, (), ()), "all": ("0", 3, (3, 3), (3, 1))},
        {"0": np.arange(12, dtype=np.float32)},
        monkeypatch,
    )
    arrays = read_torch_state_dict(path)
    assert arrays["last"] == 11
    np.testing.assert_array_equal(arrays["all"], np.arange(3, 12, dtype=np.float32).reshape(3, 3))


def test_storage_claiming_too_many_elements_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.pth"
    write_legacy(path, {"w": ("0", 0, (2,), (1,))}, {"0": np.zeros(2, dtype=np.float32)}, monkeypatch)
    data = bytearray(path.read_bytes())
    count_at = len(data) - 8 - 2 * 4  # the int64 element count just before the storage bytes
    data[count_at : count_at + 8] = np.int64(2**62).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(TorchWeightsError, match=r"storage '0' claims 4611686018427387904 elements"):
        read_torch_state_dict(path)
