"""A Spark table that only grows: each save adds rows, and a table not written yet can be asked for.

kedro-datasets' SparkDataset appends with ``save_args: {mode: append}``, but loading a table that does
not exist yet fails, so a node cannot ask "what is there already?" before the first save. The feature
table of training (``tile_features``) is exactly that: a run reads what earlier runs computed, then
adds only what is missing.
"""

from __future__ import annotations

from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.spark import SparkDataset


class AppendedSparkDataset(SparkDataset):
    """``AppendedSparkDataset`` is a ``spark.SparkDataset`` whose saves always append (Spark's job commit
    makes a save's rows appear together or not at all) and which, with ``optional: true``, loads as
    ``None`` while nothing has been written.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_training.yml``):

        ```yaml
        previous_tile_features:  # what earlier runs computed; None before the first
          type: landuse_kedro.datasets.AppendedSparkDataset
          filepath: ${globals:data_root}/04_feature/tile_features.parquet
          file_format: ${globals:spark_table_format}
          optional: true
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from pyspark.sql import SparkSession
        >>> from landuse_kedro.datasets import AppendedSparkDataset
        >>>
        >>> spark = SparkSession.builder.master("local[1]").getOrCreate()
        >>> table = AppendedSparkDataset(filepath=str(tmp_path / "features.parquet"), optional=True)
        >>> table.load() is None
        True
        >>> table.save(spark.createDataFrame([("a", 1)], ["key", "view"]))
        >>> table.save(spark.createDataFrame([("b", 2)], ["key", "view"]))
        >>> sorted(row.key for row in table.load().collect())
        ['a', 'b']
    """

    def __init__(self, *, filepath: str, optional: bool = False, **kwargs: Any) -> None:
        """Creates a new instance of ``AppendedSparkDataset`` pointing to one Spark table.

        Args:
            filepath: The table's folder: a local path or a URL Spark can write (``abfss://...``).
            optional: If true, loading a table not written yet gives ``None`` instead of an error.
            **kwargs: ``spark.SparkDataset``'s other arguments: ``file_format`` (default ``parquet``),
                ``load_args``, ``save_args`` (writer options; ``mode`` can only be ``append``),
                ``credentials``, ``metadata``.

        Raises:
            DatasetError: ``save_args`` asks for another mode than ``append``.
        """
        save_args = dict(kwargs.pop("save_args", None) or {})
        if save_args.setdefault("mode", "append") != "append":
            raise DatasetError(f"AppendedSparkDataset only appends; save_args mode is '{save_args['mode']}'.")
        super().__init__(filepath=filepath, save_args=save_args, **kwargs)
        self._optional = optional

    def load(self):
        """The whole table (a lazy DataFrame), or ``None`` if it was never written and ``optional``."""
        if self._optional and not self._exists():
            return None
        return super().load()
