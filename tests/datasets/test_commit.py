"""A re-run that fails or is killed half-way never destroys the last good output: the tile folder
(SparkPartitionedDataset) and a class raster (GeoTiffDataset). The Spark tables are tested with
spark_scoring (tests/pipelines/test_spark_scoring.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from kedro.io.core import DatasetError
from PIL import Image

from landuse_kedro.datasets import GeoTiffDataset, SparkPartitionedDataset, geotiff
from landuse_kedro.datasets.commit import PREVIOUS, STAGING
from landuse_kedro.raster import GeoRaster
from tests.helpers import local_spark_session

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    yield from local_spark_session()


class Tile:
    """A lazy tile image; a negative value fails, as a corrupt window would in a task."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> Image.Image:
        if self.value < 0:
            raise ValueError("injected task failure")
        return Image.fromarray(np.full((8, 8, 3), self.value, np.uint8), "RGB")


def folder_dataset(path: Path) -> SparkPartitionedDataset:
    return SparkPartitionedDataset(
        path=str(path), dataset="pillow.ImageDataset", filename_suffix=".png", overwrite=True
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if STAGING in p.name or PREVIOUS in p.name)


def test_a_failed_rewrite_of_the_tile_folder_keeps_the_last_complete_one(spark, tmp_path):
    tiles = tmp_path / "tiles"
    folder_dataset(tiles).save({f"train/{i:03d}": Tile(10) for i in range(30)})
    good = snapshot(tiles)
    assert len(good) == 30

    broken = {f"train/{i:03d}": Tile(20) for i in range(60)} | {"train/999": Tile(-1)}
    with pytest.raises(DatasetError, match="injected task failure"):
        folder_dataset(tiles).save(broken)
    assert snapshot(tiles) == good  # every old tile, byte for byte, and none of the new ones

    folder_dataset(tiles).save({f"validation/{i:03d}": Tile(30) for i in range(5)})
    assert sorted(snapshot(tiles)) == [f"validation/{i:03d}.png" for i in range(5)]
    assert leftovers(tiles) == []  # the failed run's staging folder was cleaned up


KILLED_WRITER = """
import sys, time
import numpy as np
from PIL import Image
from landuse_kedro.datasets import SparkPartitionedDataset

def slow(value):
    def tile():
        time.sleep(0.05)
        return Image.fromarray(np.full((8, 8, 3), value, np.uint8), "RGB")
    return tile

dataset = SparkPartitionedDataset(path=sys.argv[1], dataset="pillow.ImageDataset",
                                  filename_suffix=".png", overwrite=True)
dataset.save({f"train/{i:04d}": slow(99) for i in range(2000)})
"""


def _start_writer(folder: Path, source: str, target: Path) -> subprocess.Popen:
    """``source`` run as a script on ``target``, in its own process group (killed whole)."""
    script = folder / "writer.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), str(target)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_when(process: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline, "the writer never got there"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_killed_rewrite_of_the_tile_folder_keeps_the_last_complete_one(tmp_path, caplog):
    tiles = tmp_path / "tiles"
    folder_dataset(tiles).save({f"train/{i:03d}": Tile(10) for i in range(12)})  # no Spark: the driver writes
    good = snapshot(tiles)
    process = _start_writer(tmp_path, KILLED_WRITER, tiles)

    def half_written() -> bool:
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(f"tiles{STAGING}")]
        return bool(staged) and len(list(staged[0].rglob("*.png"))) >= 20

    _kill_when(process, half_written)
    assert snapshot(tiles) == good
    assert leftovers(tiles), "the killed writer left no staging folder: nothing was tested"

    with caplog.at_level(logging.WARNING, logger="landuse_kedro.datasets.commit"):
        folder_dataset(tiles).save({"train/000": Tile(40)})
    assert any("interrupted run" in record.getMessage() for record in caplog.records)
    assert sorted(snapshot(tiles)) == ["train/000.png"] and leftovers(tiles) == []


# ------------------------------------------------------------------ a class raster


def raster(value: int, size: int = 64) -> GeoRaster:
    return GeoRaster(
        np.full((1, size, size), value, np.uint8),
        "EPSG:26919",
        Affine(224, 0, 3e5, 0, -224, 4.7e6),
        nodata=0,
        colormap={0: (0, 0, 0, 0), 1: (228, 26, 28, 255)},
    )


def test_a_failed_rewrite_of_a_raster_keeps_the_last_good_one(tmp_path, monkeypatch):
    path = tmp_path / "predicted_classes.tif"
    GeoTiffDataset(filepath=str(path)).save(raster(1))
    good = path.read_bytes()
    written = geotiff._write

    def fail_half_way(dataset, data):
        written(dataset, data)
        raise OSError("injected failure after writing the pixels")

    monkeypatch.setattr(geotiff, "_write", fail_half_way)
    with pytest.raises(DatasetError, match="injected failure"):
        GeoTiffDataset(filepath=str(path)).save(raster(2))
    assert path.read_bytes() == good and leftovers(path) == []


KILLED_RASTER = """
import sys
import numpy as np
from affine import Affine
from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.raster import GeoRaster

pixels = np.random.default_rng(0).integers(0, 255, (4, 12000, 12000), dtype=np.uint8)
GeoTiffDataset(filepath=sys.argv[1]).save(GeoRaster(pixels, "EPSG:26919", Affine(1, 0, 3e5, 0, -1, 4.7e6)))
"""


def test_a_killed_rewrite_of_a_raster_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "predicted_classes.tif"
    GeoTiffDataset(filepath=str(path)).save(raster(1))
    good = path.read_bytes()
    process = _start_writer(tmp_path, KILLED_RASTER, path)

    def writing() -> bool:
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(f"{path.name}{STAGING}")]
        return bool(staged) and staged[0].stat().st_size > 1_000_000

    _kill_when(process, writing)
    assert path.read_bytes() == good
    assert leftovers(path), "the killed writer left no staging file: nothing was tested"
    GeoTiffDataset(filepath=str(path)).save(raster(1, size=32))
    assert GeoTiffDataset(filepath=str(path)).load().width == 32 and leftovers(path) == []


def test_a_live_runs_staging_is_never_removed_and_moves_never_nest(tmp_path, caplog):
    """Two runs writing one output (issue 28): the second's clean-up leaves the first's live staging
    folder alone and removes it only once its process is gone; a leftover whose owner cannot be
    proven gone is listed, not removed; a move onto an existing folder is refused, not nested."""
    import fsspec

    from landuse_kedro.datasets import commit

    fs = fsspec.filesystem("file")
    tiles = tmp_path / "tiles"
    (tiles / "train").mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        staged = tmp_path / f"tiles{STAGING}{live.pid}@{commit.HOST}-0123abcd"
        unknown = tmp_path / f"tiles{STAGING}0123456789ab"  # an older version's name: no owner
        for folder in (staged, unknown):
            (folder / "train").mkdir(parents=True)
            (folder / "train" / "000.png").write_bytes(b"half of a live run's tiles")
        with caplog.at_level(logging.WARNING, logger="landuse_kedro.datasets.commit"):
            commit.clean_leftovers(fs, str(tiles))
        assert staged.exists() and unknown.exists()
        assert "its run is still writing" in caplog.text and "cannot be proven gone" in caplog.text
    finally:
        live.kill()
        live.wait()
    commit.clean_leftovers(fs, str(tiles))
    assert not staged.exists() and unknown.exists()  # its owner is gone now

    (unknown / "train" / "000.png").rename(unknown / "part-new.png")
    with pytest.raises(FileExistsError, match="would land inside it"):
        commit._move(fs, str(unknown), str(tiles))
    assert sorted(p.name for p in tiles.iterdir()) == ["train"] and (unknown / "part-new.png").exists()
