"""A PartitionedDataset whose partitions are saved by Spark workers, in parallel.

kedro-datasets' PartitionedDataset saves every partition on the driver, one after the other: with
lazy values (functions returning the data) the driver computes and writes each one. Here the same
``{partition: value}`` dict is shipped to Spark tasks, which call each value and save it through
the configured dataset type (``pillow.ImageDataset``, ...), so the work scales with the executors
and nothing the partitions hold passes through the driver. Loading is PartitionedDataset's own.
Without an active Spark session the driver saves the partitions itself. Either way an overwrite
is staged and swapped in whole.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from landuse_kedro.datasets.commit import clean_leftovers, staging_path, swap_in
from landuse_kedro.storage import shippable

logger = logging.getLogger(__name__)

MAX_PARTITIONS_PER_TASK = 512
"""Bounds a task, so a retry or a straggler costs little."""


class SparkPartitionedDataset(PartitionedDataset):
    """PartitionedDataset saved by Spark tasks. Partitions are split into tasks in the order of
    the dict given (keep related partitions together, e.g. tiles of one scene in row order);
    each task saves its share, and the save fails unless every partition was written.

    With ``overwrite: true`` the new folder is written beside the old one and swapped in only once
    every partition is written (``datasets.commit``): a failed or killed re-run leaves the last
    complete folder, never a mix of old and new partitions.
    """

    def save(self, data: dict[str, Any]) -> None:
        folder = self._filesystem._strip_protocol(self._normalized_path).rstrip(self._sep)
        if not self._overwrite:
            self._save_partitions(data, folder)
            return
        clean_leftovers(self._filesystem, folder)
        staged = staging_path(folder)
        self._save_partitions(data, staged)
        swap_in(self._filesystem, staged, folder)
        self._invalidate_caches()

    def _save_partitions(self, data: dict[str, Any], root: str) -> None:
        """Each partition saved under ``root`` at the path it has under the dataset's folder."""
        folder = len(self._partition_to_path("")) - len(self._filename_suffix)
        items = [(self._join_protocol(root + self._sep + self._partition_to_path(key)[folder:]), value)
                 for key, value in data.items()]
        dataset_type, filepath_arg, lazily = self._dataset_type, self._filepath_arg, self._save_lazily
        spark = _active_session()
        if spark is None:
            for filepath, value in items:
                kwargs = {**deepcopy(self._dataset_config), filepath_arg: filepath}
                dataset_type(**kwargs).save(value() if lazily and callable(value) else value)
            return
        cores = spark.sparkContext.defaultParallelism
        tasks = max(1, min(len(items), max(2 * cores, -(-len(items) // MAX_PARTITIONS_PER_TASK))))
        # executors take storage secrets from their environment, never from the shipped task
        config = {**self._dataset_config, **({"credentials": shippable(self._dataset_config["credentials"])}
                                             if self._dataset_config.get("credentials") else {})}

        def save_partitions(partitions):
            written = 0
            for filepath, value in partitions:
                kwargs = deepcopy(config)
                kwargs[filepath_arg] = filepath
                dataset_type(**kwargs).save(value() if lazily and callable(value) else value)
                written += 1
            yield written

        logger.info("Saving %d partitions of %s in %d Spark tasks", len(items), self._path, tasks)
        written = sum(spark.sparkContext.parallelize(items, tasks).mapPartitions(save_partitions).collect())
        if written != len(items):
            raise DatasetError(f"Spark tasks wrote {written} of {len(items)} partitions of '{self._path}'.")


def _active_session():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()
