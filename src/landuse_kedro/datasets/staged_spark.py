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
    """``StagedSparkDataset`` is a ``spark.SparkDataset`` whose saves are written beside the
    current table and swapped in only once the Spark job has succeeded; loading is SparkDataset's
    own.

    ``save_args: {mode: overwrite}`` then means "replace the table when the new one is complete":
    a job that fails or is killed leaves the last good table, and at most a ``.staging-<id>``
    sibling that the next save removes. The swap uses fsspec on the driver (a rename on a local
    disk; file by file on Azure storage, see ``datasets.commit``).

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_spark_scoring.yml`` and
        ``catalog_development_inference.yml``):

        ```yaml
        scoring_predictions:  # one row per scored file
          type: landuse_kedro.datasets.StagedSparkDataset
          filepath: ${globals:data_root}/07_model_output/scoring_predictions.parquet
          file_format: ${globals:spark_table_format}
          save_args:
            mode: overwrite
          credentials: storage
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> from pyspark.sql import SparkSession
        >>> from landuse_kedro.datasets import StagedSparkDataset
        >>>
        >>> spark = SparkSession.builder.master("local[1]").getOrCreate()
        >>> table = StagedSparkDataset(filepath=str(tmp_path / "predictions.parquet"),
        ...                            save_args={"mode": "overwrite"})
        >>> table.save(spark.createDataFrame([("t1", "Forest")], ["image_id", "predicted_label"]))
        >>> table.save(spark.createDataFrame([("t2", "Developed")], ["image_id", "predicted_label"]))
        >>> [row.image_id for row in table.load().collect()], sorted(p.name for p in tmp_path.iterdir())
        (['t2'], ['predictions.parquet'])
    """

    def __init__(self, *, filepath: str, credentials: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Creates a new instance of ``StagedSparkDataset`` pointing to one Spark table.

        Args:
            filepath: The table's folder: a local path or a URL Spark can write
                (``abfss://<container>@<account>.dfs.core.windows.net/...``); fsspec opens the same
                URL for the swap.
            credentials: Storage options for the fsspec filesystem that swaps the folders (e.g.
                an Azure account name and key); Spark itself takes its storage credentials from
                its own configuration (``spark.yml``).
            **kwargs: ``spark.SparkDataset``'s other arguments: ``file_format`` (default
                ``parquet``), ``load_args``, ``save_args`` (``mode``, ``partitionBy``, writer
                options), ``version``, ``metadata``.
        """
        super().__init__(filepath=filepath, credentials=credentials, **kwargs)
        protocol = self._fs_prefix.removesuffix("://") or "file"
        self._commit_fs = fsspec.filesystem(protocol, **(credentials or {}))

    def save(self, data) -> None:
        """Writes ``data`` to ``<table>.staging-<id>`` in one Spark job, then swaps it in.

        Args:
            data: A ``pyspark.sql.DataFrame``; ``save_args`` go to its writer.
        """
        url = self._fs_prefix + str(self._get_save_path())  # as Spark sees it (abfss://c@account...)
        table = fsspec.core.strip_protocol(url)  # as fsspec sees it
        clean_leftovers(self._commit_fs, table)
        staged = staging_path(table)
        data.write.save(url + staged[len(table) :], self._file_format, **self._save_args)
        swap_in(self._commit_fs, staged, table)
