"""A task's open scene: a bad window is a failure row, an unreachable storage stops the run."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.raster import GeoRaster
from landuse_kedro.tiling import OpenScene, plan_scene


@pytest.fixture
def opened(tmp_path):
    scene = tmp_path / "x_2016.tif"
    labels = tmp_path / "nlcd_2016.tif"
    transform = Affine(1, 0, 300_000, 0, -1, 4_700_000)
    GeoTiffDataset(filepath=str(scene)).save(
        GeoRaster(np.full((4, 64, 64), 90, np.uint8), "EPSG:26919", transform)
    )
    GeoTiffDataset(filepath=str(labels)).save(
        GeoRaster(np.full((1, 8, 8), 41, np.uint8), "EPSG:26919", Affine(10, 0, 300_000, 0, -10, 4_700_000))
    )
    lut = np.full(256, 254, np.uint8)
    lut[41] = 0
    plan = plan_scene(
        "x_2016",
        GeoTiffDataset(filepath=str(scene)).load(),
        GeoTiffDataset(filepath=str(labels)).load(),
        lut,
        ["Forest"],
        {"tile_size": 32},
    )
    with OpenScene(plan) as scene_open:
        yield scene_open


def test_a_block_that_cannot_be_read_gives_one_failure_row_per_tile(opened, monkeypatch):
    monkeypatch.setattr(opened, "read_block", lambda block: (_ for _ in ()).throw(OSError("bad block")))
    parts = list(opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True))
    assert len(parts) == 4 and all(pixels is None for _, pixels in parts)
    assert all(
        "bad block" in part["read_error"].iloc[0] and "x_2016.tif" in part["read_error"].iloc[0]
        for part, _ in parts
    )


def test_an_unreachable_storage_fails_the_task_instead_of_filling_rows(opened, monkeypatch):
    monkeypatch.setattr(opened, "read_block", lambda block: (_ for _ in ()).throw(ConnectionError("refused")))
    with pytest.raises(ConnectionError):
        list(opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True))


def test_a_readable_block_is_labelled_and_read_whole(opened):
    ((labels, pixels),) = opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True)
    assert pixels.shape == (4, 32, 32, 3) and (pixels == 90).all()
    assert (labels["purity"] == 1.0).all() and labels["read_error"].isna().all()
