"""The list of image files under a folder, as full URLs, for Spark workers to read themselves.

Spark carries paths, not bytes: each Python worker opens its files with fsspec, which was measured
at about twice the speed of Spark's ``binaryFile`` source on these machines.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path


@dataclass(frozen=True)
class FileIndex:
    """File URLs plus what a worker needs to open them; the storage options may hold secrets,
    so they never appear in ``repr`` (and so never in logs)."""

    urls: tuple[str, ...]
    protocol: str = "file"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.urls)

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(self.protocol, **self.storage_options)


class FileIndexDataset(AbstractDataset[None, FileIndex]):
    """``FileIndexDataset`` lists the files under a folder whose names end with a suffix, as a
    :class:`FileIndex` of full URLs that Spark workers open themselves. Read-only.

    The listing is recursive; suffixes are compared without case (``x.PNG`` is a ``.png``). Labels
    are not read here: a scorer takes them from each file's class folder.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_spark_scoring.yml`` and
        ``catalog_acquire.yml``):

        ```yaml
        scoring_images:  # the files spark_scoring scores
          type: landuse_kedro.datasets.FileIndexDataset
          path: ${globals:data_root}/05_model_input/validation
          filename_suffix: [.png, .jpg, .jpeg]
          credentials: storage

        naip_present:  # what acquire need not fetch again; nothing there yet is an answer
          type: landuse_kedro.datasets.FileIndexDataset
          path: ${globals:data_root}/01_raw/naip
          filename_suffix: .tif
          allow_empty: true
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from landuse_kedro.datasets import FileIndexDataset
        >>>
        >>> (tmp_path / "Forest").mkdir()
        >>> for name in ("Forest/a.png", "Forest/b.PNG", "Forest/notes.txt"):
        ...     _ = (tmp_path / name).write_bytes(b"")
        >>> index = FileIndexDataset(path=str(tmp_path), filename_suffix=".png").load()
        >>> len(index), [url.rsplit("/", 2)[-2:] for url in index.urls]
        (2, [['Forest', 'a.png'], ['Forest', 'b.PNG']])
    """

    def __init__(
        self,
        *,
        path: str,
        filename_suffix: str | list[str] = "",
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        allow_empty: bool = False,
    ) -> None:
        """Creates a new instance of ``FileIndexDataset`` listing one folder.

        Args:
            path: The folder to list, recursively, with any fsspec protocol (``abfss://``,
                ``memory://``; none means a local folder).
            filename_suffix: One suffix or a list of them, compared without case; files whose
                names end otherwise are not listed. Empty: every file.
            credentials: Storage options for fsspec, e.g. an Azure account name and key. They
                travel in the :class:`FileIndex` to the workers (kept out of its ``repr``).
            fs_args: Further arguments to the fsspec filesystem, merged over ``credentials``.
            metadata: Any arbitrary metadata; ignored by Kedro, read by plugins (kedro-viz's
                ``layer``).
            allow_empty: If true, a missing or empty folder gives an empty index instead of an
                error (the acquire pipeline asks what is already there).
        """
        self._allow_empty = allow_empty
        self._protocol, self._path = get_protocol_and_path(path)
        suffixes = [filename_suffix] if isinstance(filename_suffix, str) else list(filename_suffix)
        self._suffixes = tuple(suffix.lower() for suffix in suffixes)
        self._storage_options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self.metadata = metadata

    def load(self) -> FileIndex:
        """Lists the folder now (each load lists again).

        Returns:
            A :class:`FileIndex`: the matching files' URLs, sorted (local paths for local files),
            with the protocol and storage options a worker opens them with.

        Raises:
            DatasetError: The folder is missing or holds no matching file, unless ``allow_empty``.
        """
        fs = fsspec.filesystem(self._protocol, **self._storage_options)
        if not fs.exists(self._path):
            if self._allow_empty:
                return FileIndex((), self._protocol, self._storage_options)
            raise DatasetError(f"No folder '{self._path}' to list files from.")
        found = sorted(p for p in fs.find(self._path) if p.lower().endswith(self._suffixes))
        if not found and not self._allow_empty:
            raise DatasetError(
                f"No {' or '.join(f'*{s}' for s in self._suffixes)} files under '{self._path}'."
            )
        urls = tuple(_unstrip(fs, p, self._protocol) for p in found)
        return FileIndex(urls, self._protocol, self._storage_options)

    def save(self, data: None) -> None:
        """Always refused: the files are written by their own dataset (e.g. ``model_input_tiles``).

        Raises:
            DatasetError: Always.
        """
        raise DatasetError("FileIndexDataset is read-only: write the files with their own dataset.")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "protocol": self._protocol, "filename_suffix": list(self._suffixes)}


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, protocol: str) -> str:
    return path if protocol == "file" else fs.unstrip_protocol(path)
