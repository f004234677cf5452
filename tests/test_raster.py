from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from landuse_kedro.classes import DROPPED, NO_LABEL, LandCover, class_lookup
from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.raster import (
    GeoRaster,
    Grid,
    RasterLimits,
    TileGrid,
    code_counts,
    has_data,
    labels_on_grid,
    open_on_grid,
    overlaps,
    plurality,
    read_on_grid,
    require_metric,
    scene_grid,
    tile_value_counts,
    to_classes,
    window_bounds,
)
from tests.helpers import LAND_COVER, PROJECT_ROOT

CLASSES, NLCD_TO_CLASS = LAND_COVER["classes"], LAND_COVER["nlcd_to_class"]
UTM = CRS.from_epsg(32619)
ALBERS = CRS.from_epsg(5070)


def saved(raster: GeoRaster):
    dataset = GeoTiffDataset(filepath=f"memory://{uuid.uuid4().hex}/r.tif")
    dataset.save(raster)
    return dataset.load()


# ------------------------------------------------------------------ class table


def test_class_lookup_follows_the_walkthrough_table():
    lut = class_lookup(NLCD_TO_CLASS, CLASSES)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    expected = {21: 0, 24: 0, 81: 1, 82: 1, 41: 2, 90: 2, 52: 3, 31: 4, 71: 5, 95: 5}
    assert {code: int(lut[code]) for code in expected} == expected
    for dropped in (0, 11, 12, 250):
        assert lut[dropped] == DROPPED


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({**NLCD_TO_CLASS, "Forest": [41, 21]}, "21 is mapped to both"),
        ({**NLCD_TO_CLASS, "Shrub": []}, "'Shrub' has no NLCD codes"),
        ({**NLCD_TO_CLASS, "Wetland": [90]}, "Wetland"),
        ({**NLCD_TO_CLASS, "Barren": [31, 300]}, "300"),
    ],
)
def test_class_lookup_rejects_bad_tables(table, message):
    with pytest.raises(ValueError, match=message):
        class_lookup(table, CLASSES)


def test_to_classes_marks_nodata_and_dropped_codes():
    lut = class_lookup(NLCD_TO_CLASS, CLASSES)
    codes = np.array([[0, 11, 21], [42, 12, 95]], dtype=np.uint8)
    np.testing.assert_array_equal(to_classes(codes, lut, nodata=0), [[NO_LABEL, DROPPED, 0], [2, DROPPED, 5]])


LAND = LandCover.from_params(LAND_COVER)


def test_three_class_lookup_regroups_class_pixels_and_keeps_dropped_and_unlabelled():
    lut = LAND.three_class_lookup()
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    np.testing.assert_array_equal(lut[np.arange(6)], [0, 1, 2, 2, 2, 2])
    assert lut[DROPPED] == DROPPED and lut[NO_LABEL] == NO_LABEL
    # NLCD codes straight to 3-class pixels: 22 Developed, 82 Cultivated, 43 Forest, 11 water
    codes = np.array([[22, 82], [43, 11]], dtype=np.uint8)
    np.testing.assert_array_equal(lut[to_classes(codes, LAND.nlcd_lookup())], [[0, 1], [2, DROPPED]])


# ------------------------------------------------------------------ labelling and purity


def test_tile_counts_and_purity_on_hand_made_tiles():
    # 2 x 2 tiles of 4 px: pure Forest | 3/4 Developed + 1/4 water ; half Shrub/Barren | all water
    block = np.full((8, 8), 2, dtype=np.uint8)
    block[0:4, 4:8] = 0
    block[0:1, 4:8] = DROPPED
    block[4:8, 0:4] = 3
    block[4:8, 2:4] = 4
    block[4:8, 4:8] = DROPPED
    counts = tile_value_counts(block, 4)
    assert counts.shape == (2, 2, 256)
    assert counts[0, 1, DROPPED] == 4 and counts[1, 1, DROPPED] == 16
    winner, purity = plurality(counts, n_classes=6)
    np.testing.assert_array_equal(winner, [[2, 0], [3, 0]])  # ties -> lower index
    np.testing.assert_allclose(purity, [[1.0, 0.75], [0.5, 0.0]])


def test_plurality_reused_for_three_classes():
    names, lut = LAND.three_class_names, LAND.three_class_lookup()
    six = np.array([[2, 3, 0, 1], [4, 0, 0, 5]], dtype=np.uint8)  # two 2 x 2 tiles
    winner, purity = plurality(tile_value_counts(lut[six], 2), len(names))
    assert [names[i] for i in winner.ravel()] == ["Undeveloped", "Developed"]
    np.testing.assert_allclose(purity.ravel(), [0.75, 0.5])


# ------------------------------------------------------------------ reprojection


def test_labels_on_grid_gives_the_nlcd_cell_under_each_pixel():
    """NLCD at 30 m in CONUS Albers, image grid at 1 m in UTM 19N: every image pixel must get the
    code of the NLCD cell containing its centre (random codes, so any shift or flip fails)."""
    rng = np.random.default_rng(3)
    nlcd_transform = Affine(30, 0, 1_995_000, 0, -30, 2_423_000)
    codes = rng.choice(np.array([21, 41, 52, 71, 81, 82, 90], dtype=np.uint8), size=(1, 120, 120))
    nlcd = saved(GeoRaster(codes, ALBERS, nlcd_transform, nodata=0))

    dst_transform = Affine(1, 0, 310_037, 0, -1, 4_701_613)  # a tile at known UTM coordinates
    labels = labels_on_grid(nlcd, UTM, dst_transform, 224, 224)

    rows, cols = np.mgrid[0:224:7, 0:224:7]
    xs, ys = dst_transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    ax, ay = transform_points(UTM, ALBERS, xs, ys)
    nlcd_cols, nlcd_rows = ~nlcd_transform @ (np.asarray(ax), np.asarray(ay))
    # skip pixel centres within 1 cm of a cell edge, where either cell is a fair answer
    clear = (np.abs(nlcd_cols - np.round(nlcd_cols)) > 1e-3) & (
        np.abs(nlcd_rows - np.round(nlcd_rows)) > 1e-3
    )
    expected = codes[0, np.floor(nlcd_rows).astype(int), np.floor(nlcd_cols).astype(int)]
    got = labels[rows.ravel(), cols.ravel()]
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(got[clear], expected[clear])


def test_labels_outside_the_nlcd_raster_are_nodata():
    codes = np.full((1, 20, 20), 41, dtype=np.uint8)
    nlcd = saved(GeoRaster(codes, ALBERS, Affine(30, 0, 1_995_000, 0, -30, 2_423_000), nodata=0))
    inside_x, inside_y = transform_points(ALBERS, UTM, [1_995_300], [2_422_700])
    # a 1 km window whose top-left quarter only is over the NLCD raster
    partly = labels_on_grid(nlcd, UTM, Affine(1, 0, inside_x[0] - 800, 0, -1, inside_y[0] + 800), 1000, 1000)
    assert set(np.unique(partly)) == {0, 41}
    far = labels_on_grid(nlcd, UTM, Affine(1, 0, 400_000, 0, -1, 4_800_000), 50, 50)
    assert (far == 0).all()
    scene = saved(GeoRaster(np.zeros((3, 10, 10), np.uint8), UTM, Affine(1, 0, 400_000, 0, -1, 4_800_000)))
    assert not overlaps(scene, nlcd)


# ------------------------------------------------------------------ grids, tiles, metres


def test_tile_grid_keeps_full_tiles_with_map_bounds():
    grid = Grid(UTM, Affine(1, 0, 300_000, 0, -1, 4_700_000), width=500, height=230)
    tiles = TileGrid(grid, 224)
    assert (tiles.n_rows, tiles.n_cols, len(tiles)) == (1, 2, 2)
    assert list(tiles.cells()) == [(0, 0), (0, 1)]
    assert tiles.window(0, 1) == Window(224, 0, 224, 224)
    assert window_bounds(grid.transform, tiles.window(0, 1)) == (300_224, 4_699_776, 300_448, 4_700_000)
    assert list(TileGrid(Grid(UTM, grid.transform, 2100, 700), 224).blocks(4)) == [
        (0, 0, 3, 4),
        (0, 4, 3, 4),
        (0, 8, 3, 1),
    ]


def test_geographic_crs_is_refused_unless_a_target_crs_is_given():
    wgs84 = saved(
        GeoRaster(np.zeros((3, 40, 40), np.uint8), "EPSG:4326", Affine(1e-5, 0, -71.3, 0, -1e-5, 42.45))
    )
    with pytest.raises(ValueError, match="not a projected CRS in metres.*target_crs"):
        scene_grid(wgs84)
    with pytest.raises(ValueError, match="US survey foot|foot"):
        require_metric(CRS.from_epsg(2249), "The scene")  # Massachusetts state plane, US feet
    grid = scene_grid(wgs84, target_crs="EPSG:32619", resolution=1.0)
    assert grid.crs == UTM and grid.transform.a == 1.0
    assert 30 <= grid.width <= 36 and 40 <= grid.height <= 48  # ~0.4 arc-second ~ 0.83 m x 1.1 m


def test_a_scene_without_a_crs_is_refused_with_how_to_fix_it(tmp_path):
    path = tmp_path / "no_crs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8") as dataset:
        dataset.write(np.ones((3, 40, 40), np.uint8))
    scene = GeoTiffDataset(filepath=str(path)).load()
    assert scene.crs is None
    for target in (None, "EPSG:32619"):  # a target CRS cannot reproject what has no CRS either
        with pytest.raises(ValueError, match=r"The scene has no CRS: .*gdal_edit\.py -a_srs"):
            scene_grid(scene, target_crs=target, resolution=1.0)


def test_default_limits_admit_a_state_mosaic_and_refuse_a_header_bomb():
    limits = RasterLimits()
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text())["tiling"]
    assert RasterLimits.from_params(conf) == limits  # the defaults are the parameters'
    massachusetts = SimpleNamespace(width=500_000, height=333_000, block_shapes=((512, 512),) * 4)
    limits.check(massachusetts, "Massachusetts at 0.6 m")
    limits.check_tiles((300_000 // 224) * (200_000 // 224), "Massachusetts at 1 m")
    bomb = SimpleNamespace(width=2**20, height=2**20, block_shapes=((512, 512),) * 3)
    with pytest.raises(ValueError, match=r"Bomb declares 1048576 x 1048576 px .*tiling\.limits\.max_pixels"):
        limits.check(bomb, "Bomb")
    with pytest.raises(ValueError, match=r"tiling\.limits\.max_tiles = 4000000"):
        limits.check_tiles((2**20 // 224) ** 2, "Bomb")
    one_strip = SimpleNamespace(width=20_000, height=20_000, block_shapes=((20_000, 20_000),))
    with pytest.raises(ValueError, match=r"20000 x 20000 px internal blocks.*max_block_pixels"):
        limits.check(one_strip, "One strip")


def test_code_counts_reads_a_window_in_chunks():
    codes = np.random.default_rng(3).choice([0, 11, 41, 200], size=(1, 50, 70)).astype(np.uint8)
    source = saved(GeoRaster(codes, ALBERS, Affine(30, 0, 0, 0, -30, 0)))
    window = Window(5, 7, 61, 40)
    expected = np.bincount(codes[0, 7:47, 5:66].ravel(), minlength=256)
    np.testing.assert_array_equal(code_counts(source, window, chunk=16), expected)


def test_native_grid_is_kept_and_resampling_warps_with_a_mask():
    """Each band is a different linear ramp (band 1 grows east, band 2 south, band 3 both), so a
    flip, shift or transpose of the warp changes the values found at known map coordinates."""
    rows, cols = np.mgrid[0:64, 0:64]

    def ramps(r, c):
        return np.stack([10 + 2 * c, 20 + 3 * r, 30 + c + 2 * r])

    image = ramps(rows, cols).astype(np.uint8)
    scene = saved(GeoRaster(image, UTM, Affine(0.5, 0, 300_000, 0, -0.5, 4_700_000)))
    native = scene_grid(scene, resolution=0.5)
    np.testing.assert_array_equal(read_on_grid(scene, native, Window(3, 5, 10, 10)), image[:, 5:15, 3:13])
    coarse = scene_grid(scene, resolution=1.0)
    assert (coarse.width, coarse.height, coarse.transform.a) == (32, 32, 1.0)
    with open_on_grid(scene, coarse) as dataset:
        assert has_data(dataset, Window(0, 0, 32, 32)).all()
    pixels = read_on_grid(scene, coarse, Window(0, 0, 32, 32)).astype(float)
    # each 1 m pixel centre, placed on the map, then in the 0.5 m scene's (fractional) pixels:
    # bilinear resampling of a ramp gives the ramp's value there
    r, c = np.mgrid[0:32, 0:32]
    xs, ys = coarse.transform @ (c + 0.5, r + 0.5)
    scene_cols, scene_rows = ~scene.transform @ (xs, ys)
    np.testing.assert_allclose(pixels, ramps(scene_rows - 0.5, scene_cols - 0.5), atol=1)
    # e.g. the pixel 10.5 m east and 3.5 m south of the scene's corner: scene pixel (6.5, 20.5)
    assert coarse.transform @ (10.5, 3.5) == (300_010.5, 4_699_996.5)
    np.testing.assert_allclose(pixels[:, 3, 10], [51, 39.5, 63.5], atol=1)
