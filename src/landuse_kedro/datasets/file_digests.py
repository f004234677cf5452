"""Size and SHA-256 of every file under a folder, for catalogs that must say which bytes they describe.

A STAC catalog's ``file:size`` and ``file:checksum`` are only true of the files as they are when it is
written, so the folder is hashed when the dataset is loaded: a node that takes it as input (after the
nodes that write the files) sees what they wrote. Read through fsspec, so Azure storage answers alike.
"""

from __future__ import annotations

import hashlib
from copy import deepcopy
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError

from landuse_kedro.datasets.commit import PREVIOUS, STAGING

CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: a file is never held whole in memory


class FileDigestsDataset(AbstractDataset[None, dict[str, dict[str, Any]]]):
    """``FileDigestsDataset`` loads ``{relative path: {"size": bytes, "sha256": hex digest}}`` for every
    file under a folder, recursively, hashed in chunks when loaded. Read-only.

    Paths are relative to the folder, with ``/`` on every storage. Not listed: names starting with
    ``.`` or ``_`` (lock files, Spark's ``_SUCCESS``), a write's leftovers (``.staging-``,
    ``.previous-``: not outputs) and anything under the top-level entries named in ``exclude``
    (large tables nobody checksums, or the folder the digests are written to).

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_development_inference.yml``):

        ```yaml
        output_files:  # what the STAC catalog's file:size and file:checksum describe
          type: landuse_kedro.datasets.FileDigestsDataset
          path: ${globals:data_root}/07_model_output
          exclude: [stac, development_predictions.parquet, scoring_predictions.parquet]
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from landuse_kedro.datasets import FileDigestsDataset
        >>>
        >>> (tmp_path / "regions/a").mkdir(parents=True)
        >>> (tmp_path / "stac").mkdir()
        >>> for name in ("regions/a/map.tif", "stac/catalog.json", "_SUCCESS"):
        ...     _ = (tmp_path / name).write_bytes(b"abc")
        >>> digests = FileDigestsDataset(path=str(tmp_path), exclude=["stac"]).load()
        >>> list(digests), digests["regions/a/map.tif"]["size"]
        (['regions/a/map.tif'], 3)
        >>> digests["regions/a/map.tif"]["sha256"][:16]  # SHA-256 of b"abc"
        'ba7816bf8f01cfea'
    """

    def __init__(
        self,
        *,
        path: str,
        exclude: list[str] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``FileDigestsDataset`` over one folder.

        Args:
            path: The folder, with any fsspec protocol (``abfss://``, ``memory://``; none means a
                local folder).
            exclude: Top-level files or folders of ``path`` left out, by name.
            credentials: Storage options for fsspec, e.g. an Azure account name and key.
            fs_args: Further arguments to the fsspec filesystem, merged over ``credentials``.
            metadata: Any arbitrary metadata; ignored by Kedro, read by plugins (kedro-viz's
                ``layer``).
        """
        self._protocol = fsspec.core.split_protocol(path)[0] or "file"
        self._path = path  # whole: the filesystem strips its own protocol (an abfss:// account host too)
        self._exclude = frozenset(exclude or ())
        self._storage_options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self.metadata = metadata

    def load(self) -> dict[str, dict[str, Any]]:
        """Lists and hashes the folder now (each load does it again).

        Returns:
            Relative path -> ``{"size": int, "sha256": str}``, sorted by path; empty when the folder
            does not exist (nothing written there yet).
        """
        fs = fsspec.filesystem(self._protocol, **self._storage_options)
        root = fs._strip_protocol(self._path).rstrip("/")  # noqa: SLF001  # as fs.find names files
        if not fs.exists(root):
            return {}
        digests = {}
        for found in sorted(fs.find(root)):
            relative = found[len(root) :].lstrip("/")
            if self._listed(relative):
                digests[relative] = _digest(fs, found)
        return digests

    def _listed(self, relative: str) -> bool:
        parts = relative.split("/")
        return parts[0] not in self._exclude and not any(
            part.startswith((".", "_")) or STAGING in part or PREVIOUS in part for part in parts
        )

    def save(self, data: None) -> None:
        """Always refused: the files are written by their own datasets.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError("FileDigestsDataset is read-only: write the files with their own dataset.")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "protocol": self._protocol, "exclude": sorted(self._exclude)}


def _digest(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    sha256, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            sha256.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha256.hexdigest()}
