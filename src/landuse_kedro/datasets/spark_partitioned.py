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
from collections.abc import Iterable, Iterator
from copy import deepcopy
from functools import partial
from typing import Any

import fsspec
from kedro.io.core import DatasetError
from kedro_datasets.partitions import PartitionedDataset

from landuse_kedro.datasets.commit import clean_leftovers, staging_path, swap_in
from landuse_kedro.spark import running_session, task_count
from landuse_kedro.storage import shippable

logger = logging.getLogger(__name__)

MAX_PARTITIONS_PER_TASK = 512
"""Bounds a task, so a retry or a straggler costs little."""


class SparkPartitionedDataset(PartitionedDataset):
    """``SparkPartitionedDataset`` is a ``partitions.PartitionedDataset`` whose partitions are
    saved by Spark tasks, in parallel; loading is PartitionedDataset's own
    (``{partition: load function}``).

    ``save`` takes the same ``{partition: value}`` dict as PartitionedDataset, where a value may be
    a function returning the data (computed in the task that saves it). Partitions are split into
    tasks in the order of the dict given (keep related partitions together, e.g. tiles of one scene
    in row order); each task saves its share through the configured dataset type, and the save
    fails unless every partition was written. Without an active Spark session the driver saves
    them itself, the same way.

    With ``overwrite: true`` the new folder is written beside the old one and swapped in only once
    every partition is written (``datasets.commit``): a failed or killed re-run leaves the last
    complete folder, never a mix of old and new partitions.

    It takes PartitionedDataset's arguments, unchanged (``path``, ``dataset``, ``filename_suffix``,
    ``overwrite``, ``credentials``, ``load_args``, ``fs_args``, ``filepath_arg``, ``save_lazily``,
    ``metadata``: see ``kedro_datasets.partitions.PartitionedDataset``). The storage options
    shipped to Spark tasks leave the secrets out (``storage.shippable``): executors take those
    from their own environment.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_data_preparation.yml``):

        ```yaml
        model_input_tiles:  # <split>/<Class>/<tile_id>.png, written by Spark workers
          type: landuse_kedro.datasets.SparkPartitionedDataset
          path: ${globals:data_root}/05_model_input
          filename_suffix: .png
          overwrite: true
          credentials: storage
          dataset:
            type: pillow.ImageDataset
            save_args:
              compress_type: 2  # zlib Huffman only: noisy aerial tiles, half the time, same size
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/)
        (no Spark session here, so the driver saves the partitions):

        >>> from PIL import Image
        >>> from landuse_kedro.datasets import SparkPartitionedDataset
        >>>
        >>> tiles = SparkPartitionedDataset(path=str(tmp_path / "tiles"), dataset="pillow.ImageDataset",
        ...                                 filename_suffix=".png", overwrite=True)
        >>> tiles.save({"train/Forest/t1": lambda: Image.new("RGB", (224, 224), (34, 90, 40))})
        >>> loaded = tiles.load()
        >>> list(loaded), loaded["train/Forest/t1"]().size
        (['train/Forest/t1'], (224, 224))
    """

    def save(self, data: dict[str, Any]) -> None:
        """Saves every partition, by Spark tasks when a session is active, else on the driver.

        Args:
            data: ``{partition: value}``, a value being the data or a function returning it
                (called in the task that saves it), e.g. ``{"train/Forest/t1": TileWindow}``.
                Partitions go to tasks in this order.

        Raises:
            DatasetError: Fewer partitions were written than given.
        """
        folder = fsspec.core.strip_protocol(self._normalized_path).rstrip(self._sep)
        if not self._overwrite:
            self._save_partitions(data, folder)
            return
        clean_leftovers(self._filesystem, folder)
        staged = staging_path(folder)
        self._save_partitions(data, staged)
        swap_in(self._filesystem, staged, folder)
        self._invalidate_caches()

    def _save_partitions(self, data: dict[str, Any], root: str) -> None:
        """Each partition saved under ``root`` at the path it has under the dataset's folder: by
        Spark tasks when a session is active, else by the driver; the same per-partition save."""
        folder = len(self._partition_to_path("")) - len(self._filename_suffix)
        items = [
            (self._join_protocol(root + self._sep + self._partition_to_path(key)[folder:]), value)
            for key, value in data.items()
        ]
        spark = running_session()
        config = self._dataset_config
        if spark is not None and config.get("credentials"):
            # executors take storage secrets from their environment, never from the shipped task
            config = {**config, "credentials": shippable(config["credentials"])}
        save = partial(_save_each, self._dataset_type, config, self._filepath_arg, self._save_lazily)
        if spark is None:
            written = sum(save(items))
        else:
            tasks = task_count(len(items), spark.sparkContext.defaultParallelism, 2, MAX_PARTITIONS_PER_TASK)
            logger.info("Saving %d partitions of %s in %d Spark tasks", len(items), self._path, tasks)
            written = sum(spark.sparkContext.parallelize(items, tasks).mapPartitions(save).collect())
        if written != len(items):
            raise DatasetError(f"Spark tasks wrote {written} of {len(items)} partitions of '{self._path}'.")


def _save_each(
    dataset_type: type,
    config: dict[str, Any],
    filepath_arg: str,
    lazily: bool,
    partitions: Iterable[tuple[str, Any]],
) -> Iterator[int]:
    """Save ``(filepath, value)`` pairs through ``dataset_type``; yields how many were saved."""
    written = 0
    for filepath, value in partitions:
        kwargs = {**deepcopy(config), filepath_arg: filepath}
        dataset_type(**kwargs).save(value() if lazily and callable(value) else value)
        written += 1
    yield written
