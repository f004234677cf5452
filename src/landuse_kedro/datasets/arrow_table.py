"""A Parquet table that the driver reads itself, batch by batch, with Arrow: no Spark job, no JVM.

Training's head reads the feature table once per epoch. Streamed through Spark (a join and a sort
per epoch, results fetched through the driver's JVM), it needed a 4 GB JVM at 40,000 tiles; read
with Arrow, the JVM is not involved and the driver holds one record batch at a time. kedro-datasets'
``pandas.ParquetDataset`` loads the whole table into memory, which is what this avoids.
"""

from __future__ import annotations

from copy import deepcopy
from typing import TYPE_CHECKING, Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

if TYPE_CHECKING:
    import pyarrow.dataset as ds

PART_GLOB = "part-*.parquet"
"""Spark's and ``spark_fsspec``'s part files; never a job's ``_temporary`` or staging files."""


class ArrowTableDataset(AbstractDataset[None, "ds.Dataset"]):
    """``ArrowTableDataset`` loads the part files of a Parquet table that Spark wrote as a lazy
    ``pyarrow.dataset.Dataset``: nothing is read until the caller scans it. Read-only: use it
    transcoded beside the Spark dataset that writes the table (``tile_features@arrow``).

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_training.yml``):

        ```yaml
        tile_features@arrow:  # the same files as tile_features@spark, read by the driver
          type: landuse_kedro.datasets.ArrowTableDataset
          filepath: ${globals:data_root}/04_feature/tile_features.parquet
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> import pandas as pd
        >>> from landuse_kedro.datasets import ArrowTableDataset
        >>>
        >>> (tmp_path / "t.parquet").mkdir()
        >>> pd.DataFrame({"key": ["a", "b"]}).to_parquet(tmp_path / "t.parquet/part-0.parquet")
        >>> table = ArrowTableDataset(filepath=str(tmp_path / "t.parquet")).load()
        >>> table.to_table().column("key").to_pylist()
        ['a', 'b']
    """

    def __init__(
        self,
        *,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``ArrowTableDataset`` pointing to one table's folder.

        Args:
            filepath: The table's folder, with any fsspec protocol (``abfss://...``; none: local).
            credentials: Storage options for fsspec, e.g. an Azure account name and key.
            fs_args: Further arguments to the fsspec filesystem, merged over ``credentials``.
            metadata: Any arbitrary metadata; ignored by Kedro, read by plugins (kedro-viz's ``layer``).
        """
        self._protocol, self._path = get_protocol_and_path(filepath)
        self._storage_options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self.metadata = metadata

    def load(self) -> ds.Dataset:
        """The table's part files as of now, unread.

        Raises:
            DatasetError: The folder holds no part file (the table was never written).
        """
        import pyarrow.dataset as ds

        fs = fsspec.filesystem(self._protocol, **self._storage_options)
        parts = sorted(fs.glob(f"{self._path.rstrip('/')}/{PART_GLOB}"))
        if not parts:
            raise DatasetError(f"No table at '{self._path}': no {PART_GLOB} there.")
        return ds.dataset(parts, format="parquet", filesystem=fs)

    def save(self, data: None) -> None:
        """Always refused: the table is written by its Spark dataset.

        Raises:
            DatasetError: Always.
        """
        raise DatasetError("ArrowTableDataset is read-only: Spark writes the table.")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path, "protocol": self._protocol}
