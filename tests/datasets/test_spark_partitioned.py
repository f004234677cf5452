"""SparkPartitionedDataset: partitions computed and saved by Spark tasks, read like PartitionedDataset."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from kedro.io.core import DatasetError
from PIL import Image

from landuse_kedro.datasets import SparkPartitionedDataset
from tests.helpers import local_spark_session

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    yield from local_spark_session()


@dataclass(frozen=True)
class Tile:
    """A lazy image that refuses to be computed in the process that created it (the driver)."""

    value: int
    driver_pid: int
    allow_driver: bool = False

    def __call__(self) -> Image.Image:
        if os.getpid() == self.driver_pid and not self.allow_driver:
            raise RuntimeError("computed on the driver")
        if self.value < 0:
            raise ValueError(f"tile {self.value} cannot be made")
        return Image.fromarray(np.full((8, 8, 3), self.value, np.uint8), "RGB")


def dataset(path: Path) -> SparkPartitionedDataset:
    return SparkPartitionedDataset(
        path=str(path), dataset="pillow.ImageDataset", filename_suffix=".png", overwrite=True
    )


def test_partitions_are_computed_and_saved_by_spark_tasks(spark, tmp_path):
    stale = tmp_path / "tiles" / "old" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    data = {f"{split}/{i:03d}": Tile(i, os.getpid()) for split in ("train", "validation") for i in range(40)}
    dataset(tmp_path / "tiles").save(data)

    assert not stale.exists()  # overwrite: the folder was replaced
    loaded = dataset(tmp_path / "tiles").load()
    assert sorted(loaded) == sorted(data)
    for key in ("train/000", "validation/039"):
        assert np.asarray(loaded[key]()).max() == data[key].value


def test_a_partition_that_fails_fails_the_save_with_its_reason(spark, tmp_path):
    data = {"a": Tile(1, os.getpid()), "b": Tile(-7, os.getpid())}
    with pytest.raises(Exception, match="tile -7 cannot be made"):
        dataset(tmp_path / "tiles").save(data)


def test_without_spark_it_saves_on_the_driver(tmp_path, monkeypatch):
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    with pytest.raises(DatasetError, match="computed on the driver"):  # proves the driver path runs
        dataset(tmp_path / "a").save({"x": Tile(3, os.getpid())})
    dataset(tmp_path / "b").save({"x": Tile(3, os.getpid(), allow_driver=True)})
    assert np.asarray(dataset(tmp_path / "b").load()["x"]()).max() == 3
