"""A task's open scene: a bad window is a failure row, an unreachable storage stops the run."""

from __future__ import annotations

import socket
import uuid

import fsspec
import numpy as np
import pytest
import rasterio
from affine import Affine
from fsspec.implementations.memory import MemoryFileSystem
from rasterio.errors import RasterioIOError

from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.raster import GeoRaster
from landuse_kedro.storage import unreachable_cause
from landuse_kedro.tiling import OpenScene, plan_scene
from tests.helpers import corrupt_block


@pytest.fixture
def opened(tmp_path):
    scene = tmp_path / "x_2016.tif"
    labels = tmp_path / "nlcd_2016.tif"
    transform = Affine(1, 0, 300_000, 0, -1, 4_700_000)
    GeoTiffDataset(filepath=str(scene)).save(
        GeoRaster(np.full((4, 64, 64), 90, np.uint8), "EPSG:26919", transform)
    )
    lut = write_forest_labels(labels)
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
    monkeypatch.setattr(opened, "read_pixels", lambda block: (_ for _ in ()).throw(OSError("bad block")))
    parts = list(opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True))
    assert len(parts) == 4 and all(pixels is None for _, pixels in parts)
    assert all(
        "bad block" in part["read_error"].iloc[0] and "x_2016.tif" in part["read_error"].iloc[0]
        for part, _ in parts
    )


def test_an_unreachable_storage_fails_the_task_instead_of_filling_rows(opened, monkeypatch):
    monkeypatch.setattr(
        opened, "read_pixels", lambda block: (_ for _ in ()).throw(ConnectionError("refused"))
    )
    with pytest.raises(ConnectionError):
        list(opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True))


def test_a_readable_block_is_labelled_and_read_whole(opened):
    ((labels, pixels),) = opened.blocks_or_tiles((0, 0, 2, 2), with_pixels=True)
    assert pixels.shape == (4, 32, 32, 3) and (pixels == 90).all()
    assert (labels["label_share"] == 1.0).all() and labels["read_error"].isna().all()


# ------------------------------------------------------------------ black fill, outages


def _plan(tmp_path, pixels: np.ndarray, nodata=None, **tiling):
    """A 1 m scene in UTM 19N over one forest label raster, tiled in 32 px tiles."""
    scene, labels = tmp_path / "f_2016.tif", tmp_path / "nlcd_2016.tif"
    transform = Affine(1, 0, 300_000, 0, -1, 4_700_000)
    GeoTiffDataset(filepath=str(scene)).save(GeoRaster(pixels, "EPSG:26919", transform, nodata=nodata))
    lut = write_forest_labels(labels)
    return plan_scene(
        "f_2016",
        GeoTiffDataset(filepath=str(scene)).load(),
        GeoTiffDataset(filepath=str(labels)).load(),
        lut,
        ["Forest"],
        {"tile_size": 32, **tiling},
    )


def framed() -> np.ndarray:
    """NAIP-like imagery (no pixel 0 in every band) in a black frame: the left 40 px, the top 8."""
    pixels = np.random.default_rng(0).integers(1, 255, (4, 64, 64)).astype(np.uint8)
    pixels[:, :, :40] = 0
    pixels[:, :8, :] = 0
    pixels[3, 20, 50] = 0  # NIR 0 alone is imagery (a 4th band read as alpha would mask it)
    return pixels


def test_black_fill_in_a_scene_without_nodata_is_no_image_data(tmp_path):
    plan = _plan(tmp_path, framed())
    assert plan.image_fill == 0
    with OpenScene(plan) as scene:
        labels = scene.label_block((0, 0, 2, 2)).set_index(["row", "col"])["nodata_pixels"]
    # tile (0, 0) is all frame; (0, 1): 8 px of its 32 columns, 8 rows of the top; (1, 0) and
    # (1, 1): the left frame's columns only
    assert labels.to_dict() == {(0, 0): 32 * 32, (0, 1): 8 * 32 + 8 * 24, (1, 0): 32 * 32, (1, 1): 8 * 32}


def test_declared_nodata_or_no_fill_value_leave_black_pixels_to_gdal(tmp_path):
    declared = _plan(tmp_path, framed(), nodata=0)
    assert declared.image_fill is None  # GDAL's mask says it (0 in every band)
    with OpenScene(declared) as scene:
        missing = scene.label_block((0, 0, 2, 2))["nodata_pixels"].tolist()
    assert missing == [1024, 448, 1024, 256]  # NIR 0 alone is data, as with the fill rule
    off = _plan(tmp_path, framed(), image_fill=None)
    assert off.image_fill is None
    with OpenScene(off) as scene:
        assert (scene.label_block((0, 0, 2, 2))["nodata_pixels"] == 0).all()
    with pytest.raises(ValueError, match="tiling.image_fill must be a uint8 value"):
        _plan(tmp_path, framed(), image_fill=256)


class FlakyFileSystem(MemoryFileSystem):
    """In-memory storage whose reads fail with ConnectionError once ``failing`` is set, as
    adlfs's do when the network goes away after a file was opened."""

    protocol = "flaky"
    failing = False
    reads = 0

    def _open(self, path, mode="rb", **kwargs):
        file = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = file.read

            def flaky_read(size=-1):
                if FlakyFileSystem.failing:
                    FlakyFileSystem.reads += 1
                    raise ConnectionError("Cannot connect to host account.blob.core.windows.net:443")
                return read(size)

            file.read = flaky_read
        return file


@pytest.fixture
def flaky_plan(tmp_path):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    scene, labels = f"flaky://{uuid.uuid4().hex}/x_2016.tif", tmp_path / "nlcd_2016.tif"
    GeoTiffDataset(filepath=scene).save(
        GeoRaster(np.full((4, 64, 64), 90, np.uint8), "EPSG:26919", Affine(1, 0, 300_000, 0, -1, 4_700_000))
    )
    lut = write_forest_labels(labels)
    yield plan_scene(
        "x_2016",
        GeoTiffDataset(filepath=scene).load(),
        GeoTiffDataset(filepath=str(labels)).load(),
        lut,
        ["Forest"],
        {"tile_size": 32},
    )
    FlakyFileSystem.failing = False


@pytest.mark.parametrize("with_pixels", [False, True])  # data_preparation, development_inference
def test_storage_lost_after_the_header_fails_the_task_once_not_per_tile(flaky_plan, with_pixels):
    with OpenScene(flaky_plan) as scene:  # the header is read
        FlakyFileSystem.failing, FlakyFileSystem.reads = True, 0
        rows = []
        with pytest.raises(ConnectionError, match="Storage unreachable while reading .*x_2016.tif") as caught:
            rows.extend(scene.blocks_or_tiles((0, 0, 2, 2), with_pixels=with_pixels))
    assert rows == []  # no tile was retried alone, none recorded as a failed window
    assert "Cannot connect to host" in str(caught.value)
    assert isinstance(caught.value.__cause__, RasterioIOError)  # what rasterio raised: "Read failed"


def test_an_outage_is_told_from_a_damaged_block_under_rasterio_errors(tmp_path):
    """Real GDAL errors: curl's refused connection is an outage; a damaged block is not, nor is a
    missing file; a storage error raised under another one (``raise ... from``) is found."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RasterioIOError) as refused, rasterio.Env(GDAL_HTTP_MAX_RETRY=0):
        rasterio.open(f"/vsicurl/http://127.0.0.1:{port}/scene.tif")
    assert "CURL error" in str(refused.value) and unreachable_cause(refused.value) is not None

    path = tmp_path / "damaged.tif"
    GeoTiffDataset(filepath=str(path), save_args={"blockxsize": 32, "blockysize": 32}).save(
        GeoRaster(np.full((3, 64, 64), 90, np.uint8), "EPSG:26919", Affine(1, 0, 300_000, 0, -1, 4_700_000))
    )
    corrupt_block(path, x=1, y=1)
    with rasterio.open(path) as dataset, pytest.raises(RasterioIOError) as damaged:
        dataset.read(1)
    assert unreachable_cause(damaged.value) is None
    with pytest.raises(RasterioIOError) as missing:
        rasterio.open(tmp_path / "missing.tif")
    assert unreachable_cause(missing.value) is None

    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as error:
            raise OSError("Read failed") from error
    except OSError as wrapped:
        assert isinstance(unreachable_cause(wrapped), TimeoutError)


def write_forest_labels(path) -> np.ndarray:
    """80 m of NLCD forest (41) at 10 m in UTM 19N at ``path``; returns its lookup (41 -> class 0)."""
    GeoTiffDataset(filepath=str(path)).save(
        GeoRaster(np.full((1, 8, 8), 41, np.uint8), "EPSG:26919", Affine(10, 0, 300_000, 0, -10, 4_700_000))
    )
    lut = np.full(256, 254, np.uint8)
    lut[41] = 0
    return lut
