"""A Spark table that a failed or killed re-run cannot destroy.

kedro-datasets' SparkDataset writes with ``mode: overwrite``, which deletes the old table when
the job starts: a job that then fails leaves nothing. Here the job writes a new sibling folder and
the driver swaps it in only after the job has succeeded (``datasets.commit``). Loading is
SparkDataset's own.
"""

from __future__ import annotations

from typing import Any

import fsspec
from kedro_datasets.spark import SparkDataset

from landuse_kedro.datasets.commit import clean_leftovers, staging_path, swap_in


class StagedSparkDataset(SparkDataset):
    """``spark.SparkDataset`` whose saves are written beside the current table and swapped in."""

    def __init__(self, *, filepath: str, credentials: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(filepath=filepath, credentials=credentials, **kwargs)
        protocol = self._fs_prefix.removesuffix("://") or "file"
        self._commit_fs = fsspec.filesystem(protocol, **(credentials or {}))

    def save(self, data) -> None:
        url = self._fs_prefix + str(self._get_save_path())  # as Spark sees it (abfss://c@account...)
        table = self._commit_fs._strip_protocol(url)  # as fsspec sees it
        clean_leftovers(self._commit_fs, table)
        staged = staging_path(table)
        data.write.save(url + staged[len(table):], self._file_format, **self._save_args)
        swap_in(self._commit_fs, staged, table)
