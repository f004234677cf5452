"""A trained model as the bytes of its file, ONNX or Keras, so it can travel to Spark executors."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any, Literal

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from landuse_kedro.datasets.commit import staging_path

ModelFormat = Literal["onnx", "keras"]
Precision = Literal["fp32", "int8"]

QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    }
)
"""ONNX operators that only an integer-quantised graph holds."""


@dataclass(frozen=True)
class ModelArtifact:
    """A serialized model and its format; bytes broadcast to executors that share no disk."""

    format: ModelFormat
    payload: bytes
    version: str | None = field(default=None, compare=False)
    """The catalog version it was loaded from (``06_models/<name>/<version>/``), if versioned."""

    def __post_init__(self) -> None:
        detected = detect_model_format(self.payload)
        if detected != self.format:
            raise DatasetError(
                f"Model bytes are {detected or 'not a Keras or ONNX model'}, expected {self.format}."
            )

    def __repr__(self) -> str:
        return f"ModelArtifact(format={self.format!r}, {len(self.payload):,} bytes)"

    @cached_property
    def precision(self) -> Precision:
        """``int8`` for a quantised ONNX graph, else ``fp32``: read from the model itself, so a
        model file from elsewhere is described as truly as the project's own exports."""
        if self.format != "onnx":
            return "fp32"
        import onnx

        graph = onnx.load_model_from_string(self.payload).graph
        return "int8" if any(node.op_type in QUANTIZED_OPS for node in graph.node) else "fp32"

    @cached_property
    def sha256(self) -> str:
        """The bytes' digest: names the model even where no version does (a file from elsewhere)."""
        return hashlib.sha256(self.payload).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What a report records of the model that scored: format, precision, size in bytes, and the
        version and digest that say which model it was."""
        return {
            "format": self.format,
            "precision": self.precision,
            "bytes": len(self.payload),
            "version": self.version,
            "sha256": self.sha256,
        }


def detect_model_format(payload: bytes) -> ModelFormat | None:
    """Keras 3 ``.keras`` files are zip archives holding ``config.json``; ONNX files are protobuf
    ``ModelProto`` messages with a graph."""
    if payload[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                if "config.json" in archive.namelist():
                    return "keras"
        except zipfile.BadZipFile:
            return None
        return None
    try:
        import onnx

        model = onnx.load_model_from_string(payload)
    except Exception:  # any parse failure means "not ONNX"
        return None
    return "onnx" if len(model.graph.node) > 0 else None


class ModelFileDataset(AbstractVersionedDataset[ModelArtifact, ModelArtifact]):
    """``ModelFileDataset`` loads/saves a model file as a :class:`ModelArtifact` (its format and
    bytes) through fsspec (local, ``abfss://``), optionally versioned.

    kedro-datasets has no ONNX dataset, and ``TensorFlowModelDataset`` returns a live Keras model,
    which cannot be shipped to Spark executors; this dataset keeps the file's bytes instead. The
    format, ONNX or Keras (``.keras``), is read from the bytes, not from the file name: with
    ``scoring.backend: keras`` a file named ``.onnx`` holds a Keras model, and loads as one.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_training.yml``): versioned, so each
        training run adds ``<filepath>/<version>/<file name>`` and readers load the newest.

        ```yaml
        scoring_model:
          type: landuse_kedro.datasets.ModelFileDataset
          filepath: ${globals:data_root}/06_models/scoring_model.onnx
          versioned: true
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from onnx import TensorProto, helper
        >>> from landuse_kedro.datasets import ModelArtifact, ModelFileDataset
        >>>
        >>> x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "xy")
        >>> graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
        >>> model = ModelArtifact("onnx", helper.make_model(graph).SerializeToString())
        >>> dataset = ModelFileDataset(filepath=str(tmp_path / "scoring_model.onnx"))
        >>> dataset.save(model)
        >>> reloaded = dataset.load()
        >>> reloaded == model, reloaded.format, reloaded.precision
        (True, 'onnx', 'fp32')
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        optional: bool = False,
    ) -> None:
        """Creates a new instance of ``ModelFileDataset`` pointing to one model file.

        Args:
            filepath: Path or URL of the model file, with any fsspec protocol (``abfss://``,
                ``memory://``; none means a local file). With versioning, the folder that holds
                the versions.
            version: If specified, a ``kedro.io.core.Version``: its ``load`` (None: the newest
                version) and ``save`` (None: a new timestamp). Set by ``versioned: true`` in
                the catalog.
            credentials: Storage options for fsspec, e.g. an Azure account name and key.
            fs_args: Further arguments to the fsspec filesystem.
            metadata: Any arbitrary metadata; ignored by Kedro, read by plugins (kedro-viz's
                ``layer``).
            optional: Load gives None while no file (no version) exists, instead of failing: for
                a node that reads the model a previous run saved, if any (``previous_scoring_model``).
        """
        self._optional = optional
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **deepcopy(credentials or {}), **deepcopy(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> ModelArtifact | None:
        """Reads the model file (the newest version when versioned).

        Returns:
            A :class:`ModelArtifact` whose ``format`` is detected from the bytes; None when
            ``optional`` and there is no file yet.

        Raises:
            DatasetError: The file is neither a Keras ``.keras`` archive nor an ONNX graph.
        """
        if self._optional and not self._exists():
            return None
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            payload = handle.read()
        model_format = detect_model_format(payload)
        if model_format is None:
            raise DatasetError(
                f"'{load_path}' is not a Keras (.keras) or ONNX model file ({len(payload)} bytes)."
            )
        version = self.resolve_load_version() if self._version is not None else None
        return ModelArtifact(model_format, payload, version)

    def save(self, data: ModelArtifact) -> None:
        """Writes the artifact's bytes as they are (a new version when versioned). A local file is
        written beside (``<name>.staging-<id>``) and renamed into place, so a save killed midway leaves
        no file of the model's name: readers, which look only for that name in each version folder,
        still load the previous version.

        Args:
            data: The model to write, e.g. ``keras_to_onnx(model)`` from ``models.onnx_export``.

        Raises:
            DatasetError: ``data`` is not a :class:`ModelArtifact`.
        """
        if not isinstance(data, ModelArtifact):
            raise DatasetError(f"ModelFileDataset saves a ModelArtifact, got {type(data).__name__}.")
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(save_path).parent), exist_ok=True)
        if self._protocol != "file":  # an object store shows a blob only once it is whole (one commit)
            with self._fs.open(save_path, "wb") as handle:
                handle.write(data.payload)
        else:  # beside, then one rename: a save killed midway leaves no half model under the model's name
            staged = staging_path(save_path)
            try:
                with self._fs.open(staged, "wb") as handle:
                    handle.write(data.payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(staged, save_path)
            finally:
                if os.path.exists(staged):
                    os.remove(staged)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "version": self._version,
            "optional": self._optional,
        }

    def _invalidate_cache(self) -> None:
        filepath = get_filepath_str(self._filepath, self._protocol)
        self._fs.invalidate_cache(filepath)
