from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from landuse_kedro import tiling
from landuse_kedro.classes import class_lookup
from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.pipelines.data_preparation import nodes, rejects
from landuse_kedro.raster import GeoRaster
from tests.helpers import (
    LAND_COVER,
    corrupt_block,
    local_spark_session,
    registered_pipelines,
    run_pipeline,
)

CLASSES = LAND_COVER["classes"]
TILING = {"tile_size": 32, "resolution": 1.0, "target_crs": None}
OPTIONS = {
    "min_label_share": 0.9,
    "validation_regions": ["middlesex"],
    "max_tiles_per_class": None,
    "seed": 42,
}
UTM, ALBERS = CRS.from_epsg(32619), CRS.from_epsg(5070)
# One band of three tiles per code, left to right, in UTM: 6 classes, then water (dropped).
BAND_CODES = np.array([21, 81, 41, 52, 31, 71, 11], dtype=np.uint8)
COLOURS = {
    21: (150, 150, 150),
    81: (200, 190, 90),
    41: (30, 90, 40),
    52: (120, 110, 70),
    31: (210, 200, 180),
    71: (140, 180, 90),
    11: (40, 60, 120),
}
ORIGINS = {"middlesex": (310_000.0, 4_702_000.0), "worcester": (300_000.0, 4_690_000.0)}


def band_code(x: np.ndarray, x0: float, tile_size: int) -> np.ndarray:
    return BAND_CODES[((x - x0) // (3 * tile_size)).astype(int) % len(BAND_CODES)]


def write_scene_set(
    data_root: Path,
    *,
    tile_size: int = 32,
    years=(2012, 2016),
    nlcd_years=(2011, 2016),
    tile_rows: int = 2,
    unlabelled_cols: int = 1,
    nodata: int | None = 0,
) -> None:
    """NAIP-like 4-band 1 m scenes in UTM 19N and NLCD-like 30 m rasters in CONUS Albers that
    cover all but the ``unlabelled_cols`` rightmost tile columns of each scene. Land cover comes
    in vertical bands three tiles wide, aligned with the tile grid in UTM. ``nodata``: what the
    scenes declare (real NAIP declares none); no pixel is 0 in every band but a hole in one tile."""
    width, height = len(BAND_CODES) * 3 * tile_size + unlabelled_cols * tile_size, tile_rows * tile_size
    rng = np.random.default_rng(0)
    for region, (x0, y0) in ORIGINS.items():
        cols = np.arange(width) + 0.5 + x0
        palette = np.array([COLOURS[c] for c in band_code(cols, x0, tile_size)], dtype=np.uint8).T
        for year in years:
            image = np.empty((4, height, width), np.uint8)
            image[:3] = palette[:, None, :]
            image[3] = 100
            image = np.clip(image + rng.integers(-8, 9, image.shape), 1, 255).astype(np.uint8)
            if region == "worcester" and year == years[-1]:
                image[:, 5:9, 4 * tile_size + 4 : 4 * tile_size + 8] = 0  # a nodata hole in one tile
            GeoTiffDataset(filepath=str(data_root / "01_raw" / "naip" / f"{region}_{year}.tif")).save(
                GeoRaster(image, UTM, Affine(1, 0, x0, 0, -1, y0), nodata=nodata)
            )
    # NLCD: Albers 30 m over both regions; each cell gets the band of its centre's UTM position.
    boxes = [
        transform_bounds(UTM, ALBERS, x0 - 200, y0 - height - 200, x0 + width + 200, y0 + 200)
        for x0, y0 in ORIGINS.values()
    ]
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    transform = Affine(30, 0, left // 30 * 30, 0, -30, top // 30 * 30 + 30)
    shape = (int((top - bottom) // 30) + 2, int((right - left) // 30) + 2)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    ax, ay = transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    ux, uy = map(np.asarray, transform_points(ALBERS, UTM, ax, ay))
    codes = np.zeros(ux.shape, np.uint8)
    for x0, y0 in ORIGINS.values():
        near = (np.abs(uy - y0) < 5_000) & (np.abs(ux - x0) < 5_000)
        codes[near] = band_code(ux[near], x0, tile_size)
        codes[near & (ux >= x0 + width - unlabelled_cols * tile_size)] = 0  # beyond NLCD coverage
    for year in nlcd_years:
        GeoTiffDataset(filepath=str(data_root / "01_raw" / "nlcd" / f"nlcd_{year}.tif")).save(
            GeoRaster(codes.reshape(1, *shape), ALBERS, transform, nodata=0)
        )


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_scene_set(root)
    return root


def loaders(folder: Path) -> dict:
    return {p.stem: GeoTiffDataset(filepath=str(p)).load for p in sorted(folder.glob("*.tif"))}


@pytest.fixture(scope="module")
def spark():
    yield from local_spark_session()


def plans_of(root: Path, **tiling) -> dict:
    return nodes.plan_scenes(
        loaders(root / "01_raw" / "naip"), loaders(root / "01_raw" / "nlcd"), LAND_COVER, {**TILING, **tiling}
    )


def candidates_of(root: Path, **options) -> pd.DataFrame:
    return nodes.label_tiles(plans_of(root), {**OPTIONS, **options})


# ------------------------------------------------------------------ pairing and labelling


@pytest.mark.parametrize(
    ("year", "expected"), [(2012, 2011), (2016, 2016), (2013, 2011), (2014, 2016), (2020, 2016), (2005, 2011)]
)
def test_scene_gets_the_nlcd_of_the_nearest_year_ties_older(year, expected):
    assert tiling.nearest_year(year, {2011: "a", 2016: "b"}) == expected
    assert tiling.nearest_year(2012, {2010: "a", 2014: "b"}) == 2010


def test_tiles_labelled_from_reprojected_nlcd_with_reasons(scene_root, spark):
    candidates = candidates_of(scene_root)
    assert set(candidates["scene"]) == {
        "middlesex_2012",
        "middlesex_2016",
        "worcester_2012",
        "worcester_2016",
    }
    assert set(candidates.loc[candidates.scene == "middlesex_2012", "nlcd_year"]) == {2011}
    assert len(candidates) == 4 * 2 * (len(BAND_CODES) * 3 + 1)

    scene = candidates[candidates.scene == "worcester_2016"].set_index("col")
    lut = class_lookup(LAND_COVER["nlcd_to_class"], CLASSES)
    for band, code in enumerate(BAND_CODES[:6]):  # the middle tile of each band is pure
        tile = scene.loc[3 * band + 1].iloc[0]
        assert tile["class_name"] == CLASSES[lut[code]] and tile["label_share"] >= 0.9
        assert tile["reject_reason"] is None or band == 1  # tile 4: the nodata hole
    assert scene.loc[4].iloc[0]["reject_reason"] == rejects.IMAGE_NODATA  # hole in row 0 only
    assert scene.loc[4].iloc[1]["reject_reason"] is None
    assert set(scene.loc[[18, 19], "reject_reason"]) == {rejects.DROPPED_DOMINANT}  # water band
    assert set(scene.loc[21, "reject_reason"]) == {rejects.OUTSIDE_LABELS}  # past NLCD coverage
    assert (candidates.loc[candidates.reject_reason.isna(), "label_share"] >= 0.9).all()
    assert (candidates.loc[candidates.reject_reason == rejects.IMPURE, "label_share"] < 0.9).all()


def test_min_label_share_decides_impure_tiles(scene_root, spark):
    # band-edge tiles hold a few pixels of the neighbouring band: impure at 1.0, usable at 0.5
    strict = candidates_of(scene_root, min_label_share=1.0)
    relaxed = candidates_of(scene_root, min_label_share=0.5)
    assert (strict.reject_reason == rejects.IMPURE).sum() > (relaxed.reject_reason == rejects.IMPURE).sum()
    usable = strict[strict.reject_reason.isna()]
    assert (usable.label_share == 1.0).all()


def test_unreadable_window_is_rejected_with_its_reason_not_skipped(scene_root, tmp_path, spark):
    naip = tmp_path / "naip"
    naip.mkdir()
    source = GeoTiffDataset(filepath=str(scene_root / "01_raw" / "naip" / "middlesex_2016.tif")).load()
    with source.open() as dataset:  # declares no nodata, as NAIP: GDAL's mask then reads no pixel
        raster = GeoRaster(dataset.read(), dataset.crs, dataset.transform)
    GeoTiffDataset(
        filepath=str(naip / "middlesex_2016.tif"), save_args={"blockxsize": 32, "blockysize": 32}
    ).save(raster)
    corrupt_block(naip / "middlesex_2016.tif", x=4, y=1)  # the window of tile (row 1, col 4)
    plans = nodes.plan_scenes(loaders(naip), loaders(scene_root / "01_raw" / "nlcd"), LAND_COVER, TILING)
    candidates = nodes.label_tiles(plans, OPTIONS).set_index(["row", "col"])
    clean = candidates_of(scene_root)
    assert len(candidates) == len(clean[clean.scene == "middlesex_2016"])  # every tile has its row
    assert candidates.loc[(1, 4), "reject_reason"] == rejects.UNREADABLE
    assert "middlesex_2016.tif" in candidates.loc[(1, 4), "read_error"]
    assert (
        candidates.reject_reason == rejects.UNREADABLE
    ).sum() == 1  # its block's other tiles were labelled
    others = candidates.drop(index=(1, 4))
    expected = clean[clean.scene == "middlesex_2016"].set_index(["row", "col"]).drop(index=(1, 4))
    pd.testing.assert_series_equal(others["reject_reason"], expected["reject_reason"])


def _rewrite(path: Path, pixels=None, block: int = 32) -> None:
    """``path`` saved again in ``block`` px internal blocks, declaring no nodata (as NAIP)."""
    source = GeoTiffDataset(filepath=str(path)).load()
    with source.open() as dataset:
        raster = GeoRaster(dataset.read() if pixels is None else pixels, dataset.crs, dataset.transform)
    GeoTiffDataset(filepath=str(path), save_args={"blockxsize": block, "blockysize": block}).save(raster)


def test_black_frame_without_nodata_is_never_a_kept_tile(tmp_path, spark):
    """NAIP-like scenes that declare no nodata; one has a black frame (0 in every band) around its
    imagery, as quarter quads do: every tile with fill is rejected as image_nodata."""
    write_scene_set(tmp_path, nodata=None)
    scene = tmp_path / "01_raw" / "naip" / "worcester_2016.tif"
    pixels = GeoTiffDataset(filepath=str(scene)).load().read()
    pixels[:, :, : 5 * 32 + 10] = 0  # the west edge up to 10 px into tile column 5
    pixels[:, :12, :] = 0  # the top 12 rows
    _rewrite(scene, pixels)
    candidates = candidates_of(tmp_path)
    usable = candidates[candidates.reject_reason.isna()]
    framed = candidates[
        (candidates.scene == "worcester_2016") & ((candidates.col <= 5) | (candidates.row == 0))
    ]
    assert len(framed) > 20 and set(framed.reject_reason) == {rejects.IMAGE_NODATA}
    assert (usable.nodata_pixels == 0).all()
    source = GeoTiffDataset(filepath=str(scene)).load()
    for tile in usable[usable.scene == "worcester_2016"].itertuples():  # no kept tile holds fill
        window = ((tile.row_off, tile.row_off + 32), (tile.col_off, tile.col_off + 32))
        assert (source.read(window=window) > 0).any(axis=0).all(), tile.tile_id
    assert len(usable[usable.scene == "worcester_2016"]) > 5  # the imagery inside the frame is kept
    kept = nodes.select_tiles(candidates, LAND_COVER, OPTIONS)
    assert not set(kept.tile_id) & set(framed.tile_id)


def test_damaged_blocks_in_selected_and_unselected_windows_are_unreadable_rows(project_copy):
    """Scenes that declare no nodata (GDAL's mask then reads no pixel): a damaged compressed block
    in a window the last run selected and one in a window never selected (water) are both
    `unreadable` rows and the run succeeds; above data_preparation.max_failed_fraction the run
    fails after its report, with the tiles, manifest and candidates of that same run."""
    data = project_copy / "data"
    write_scene_set(data, tile_size=224, tile_rows=1, nodata=None)
    run_pipeline(project_copy, "data_preparation")
    manifest = pd.read_parquet(data / "05_model_input" / "tile_manifest.parquet")
    selected = manifest[manifest.scene == "worcester_2012"].iloc[0]
    scene = data / "01_raw" / "naip" / "worcester_2012.tif"
    _rewrite(scene, block=224)
    water = 19  # the water band's middle tile: dropped_dominant, never selected
    corrupt_block(scene, x=int(selected.col_off) // 224, y=0)
    corrupt_block(scene, x=water, y=0)

    run_pipeline(project_copy, "data_preparation")
    candidates = pd.read_parquet(data / "02_intermediate" / "tile_candidates.parquet")
    unreadable = candidates[candidates.reject_reason == rejects.UNREADABLE]
    assert sorted(unreadable.col) == sorted([int(selected.col_off) // 224, water])
    assert set(unreadable.scene) == {"worcester_2012"}
    assert unreadable.read_error.str.contains("worcester_2012.tif").all()
    manifest = pd.read_parquet(data / "05_model_input" / "tile_manifest.parquet")
    assert selected.tile_id not in set(manifest.tile_id) and len(manifest) > 0
    report = json.loads((data / "08_reporting" / "preparation_report.json").read_text())
    assert report["rejected"]["unreadable"] == 2

    with pytest.raises(
        RuntimeError, match=r"2 of \d+ tile windows failed.*data_preparation.max_failed_fraction"
    ):
        run_pipeline(
            project_copy, "data_preparation", params={"data_preparation": {"max_failed_fraction": 0.0}}
        )
    report = json.loads((data / "08_reporting" / "preparation_report.json").read_text())
    assert report["rejected"]["unreadable"] == 2 and report["tiles_seen"] == len(candidates)


def test_a_run_saves_candidates_with_its_tiles_and_checks_failures_after_its_report():
    """tile_candidates is saved only once the tiles are (a run that fails before leaves the last
    run's tiles, manifest and candidates together), and the failure budget is checked last."""
    pipeline = registered_pipelines()["data_preparation"]
    saves_candidates = next(node for node in pipeline.nodes if "tile_candidates" in node.outputs)
    assert {"model_input_tiles", "labelled_tiles"} <= set(saves_candidates.inputs)
    assert "tile_manifest" in saves_candidates.outputs
    after_report = {node.name for node in pipeline.from_inputs("preparation_report").nodes}
    assert after_report == {"plot_preparation_report", "check_unreadable_windows"}


# ------------------------------------------------------------------ selection


def hand_made_candidates() -> pd.DataFrame:
    rows = []
    counts = {"middlesex": [3, 4, 5, 6, 7, 8], "worcester": [9, 2, 4, 4, 4, 4], "essex": [1, 3, 3, 3, 3, 3]}
    for region, per_class in counts.items():
        for name, n in zip(CLASSES, per_class):
            for i in range(n):
                rows.append(
                    {
                        "tile_id": f"{region}_2016_{name}_{i}",
                        "scene": f"{region}_2016",
                        "region": region,
                        "year": 2016,
                        "nlcd_year": 2016,
                        "class_name": name,
                        "label_share": 1.0,
                        "reject_reason": None,
                    }
                )
    rows.append({**rows[0], "tile_id": "rejected", "reject_reason": rejects.IMPURE})
    return pd.DataFrame(rows)


def test_balanced_region_disjoint_and_seeded_selection():
    candidates = hand_made_candidates()
    selection = nodes.select_tiles(candidates, LAND_COVER, OPTIONS)
    per_split = selection.groupby(["split", "class_name"]).size().unstack()
    assert (per_split.loc["validation"] == 3).all()  # middlesex's rarest class has 3
    assert (per_split.loc["train"] == 5).all()  # worcester + essex: Cultivated 2 + 3
    assert set(selection.loc[selection.split == "validation", "region"]) == {"middlesex"}
    assert set(selection.loc[selection.split == "train", "region"]) == {"worcester", "essex"}
    assert "rejected" not in set(selection.tile_id)
    assert list(selection.partition) == sorted(
        selection.split + "/" + selection.class_name + "/" + selection.tile_id
    )

    again = nodes.select_tiles(candidates.sample(frac=1, random_state=1), LAND_COVER, OPTIONS)
    pd.testing.assert_frame_equal(selection, again)
    others = [
        set(nodes.select_tiles(candidates, LAND_COVER, {**OPTIONS, "seed": s}).tile_id) for s in range(5)
    ]
    assert any(o != set(selection.tile_id) for o in others)
    capped = nodes.select_tiles(candidates, LAND_COVER, {**OPTIONS, "max_tiles_per_class": 2})
    assert (capped.groupby(["split", "class_name"]).size() == 2).all()


def test_empty_class_after_filtering_is_named():
    candidates = hand_made_candidates()
    candidates.loc[
        (candidates.region == "middlesex") & (candidates.class_name == "Shrub"), "reject_reason"
    ] = "impure"
    with pytest.raises(ValueError, match=r"No usable validation tile of class\(es\) \['Shrub'\]"):
        nodes.select_tiles(candidates, LAND_COVER, OPTIONS)


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        (["suffolk"], "suffolk"),
        ([], "validation_regions"),
        (["middlesex", "worcester", "essex"], "none is left"),
    ],
)
def test_validation_regions_must_leave_a_training_region(regions, message):
    with pytest.raises(ValueError, match=message):
        nodes.select_tiles(hand_made_candidates(), LAND_COVER, {**OPTIONS, "validation_regions": regions})


# ------------------------------------------------------------------ bad input


def write(path: Path, array: np.ndarray, crs, transform: Affine) -> None:
    GeoTiffDataset(filepath=str(path)).save(GeoRaster(array, crs, transform))


def test_bad_inputs_get_clear_errors(scene_root, tmp_path):
    nlcd = loaders(scene_root / "01_raw" / "nlcd")
    naip = loaders(scene_root / "01_raw" / "naip")
    x0, y0 = ORIGINS["middlesex"]
    cases = {
        "two_bands_2016": (np.ones((2, 64, 64), np.uint8), UTM, Affine(1, 0, x0, 0, -1, y0), "2 band"),
        "degrees_2016": (
            np.ones((3, 64, 64), np.uint8),
            "EPSG:4326",
            Affine(1e-5, 0, -71.3, 0, -1e-5, 42.45),
            "not a projected CRS in metres",
        ),
        "elsewhere_2016": (
            np.ones((3, 64, 64), np.uint8),
            UTM,
            Affine(1, 0, 500_000, 0, -1, 4_500_000),
            "does not overlap the NLCD",
        ),
        "tiny_2016": (np.ones((3, 20, 20), np.uint8), UTM, Affine(1, 0, x0, 0, -1, y0), "smaller than one"),
    }
    for key, (array, crs, transform, message) in cases.items():
        write(tmp_path / f"{key}.tif", array, crs, transform)
        with pytest.raises(ValueError, match=f"'{key}'.*{message}|{message}.*'{key}'"):
            nodes.plan_scenes({key: loaders(tmp_path)[key]}, nlcd, LAND_COVER, TILING)
    with pytest.raises(ValueError, match="No NAIP scenes"):
        nodes.plan_scenes({}, nlcd, LAND_COVER, TILING)
    with pytest.raises(ValueError, match="No NLCD rasters"):
        nodes.plan_scenes(naip, {}, LAND_COVER, TILING)
    with pytest.raises(ValueError, match="not named <region>_<year>"):
        nodes.plan_scenes({"middlesex": naip["middlesex_2012"]}, nlcd, LAND_COVER, TILING)
    with pytest.raises(ValueError, match="not named nlcd_<year>"):
        nodes.plan_scenes(naip, {"landcover": nlcd["nlcd_2011"]}, LAND_COVER, TILING)


def test_degrees_scene_is_tiled_in_metres_with_a_target_crs(scene_root, tmp_path, spark):
    """A scene in EPSG:4326 over middlesex, tiled on a 1 m UTM grid: the tiles sit where the scene
    is on the map, and each carries the land cover of the NLCD bands (``band_code``) under it."""
    x0, y0 = ORIGINS["middlesex"]
    lon, lat = transform_points(UTM, "EPSG:4326", [x0 + 100], [y0 - 20])
    write(
        tmp_path / "middlesex_2016.tif",
        np.full((3, 300, 800), 90, np.uint8),
        "EPSG:4326",
        Affine(1e-5, 0, lon[0], 0, -1e-5, lat[0]),
    )
    plans = nodes.plan_scenes(
        loaders(tmp_path),
        loaders(scene_root / "01_raw" / "nlcd"),
        LAND_COVER,
        {**TILING, "target_crs": "EPSG:32619"},
    )
    candidates = nodes.label_tiles(plans, OPTIONS)
    assert set(candidates.crs) == {"EPSG:32619"}

    # Where: a grid of 32 m tiles from the top-left corner of the scene's footprint in UTM.
    left, _, right, top = transform_bounds(
        "EPSG:4326", UTM, lon[0], lat[0] - 300e-5, lon[0] + 800e-5, lat[0], densify_pts=21
    )
    assert candidates.minx.min() == pytest.approx(left, abs=1) and candidates.maxy.max() == pytest.approx(
        top, abs=1
    )
    assert len(candidates) == int((right - left) // 32) * len(set(candidates.row)) > 100
    np.testing.assert_allclose(candidates.minx, candidates.minx.min() + 32 * candidates.col)
    np.testing.assert_allclose(candidates.maxy, candidates.maxy.max() - 32 * candidates.row)
    assert (candidates.maxx - candidates.minx == 32).all() and (candidates.maxy - candidates.miny == 32).all()

    # What: bands of 3 x 32 m from x0, in BAND_CODES order, then no NLCD from x0 + 672 m. A pixel
    # gets the code of the 30 m Albers cell around it, whose centre (which set the code) may be up
    # to 21.2 m away: so a class's share of a tile lies between the tile's share of its band shrunk
    # and grown by that much. A tile shifted by a tile width breaks these bounds.
    lut = class_lookup(LAND_COVER["nlcd_to_class"], CLASSES)
    band_of_class = {CLASSES[lut[code]]: band for band, code in enumerate(BAND_CODES[:6])}
    slack = 30 / np.sqrt(2) + 0.5

    def share(tile, start: float, end: float) -> float:
        return max(0.0, min(tile.maxx, end) - max(tile.minx, start)) / 32

    def band_share(tile, band: int, grow: float) -> float:
        start = x0 + band * 3 * 32
        return share(tile, start - grow, start + 3 * 32 + grow)

    sure = {name: 0 for name in CLASSES}
    for tile in candidates.itertuples():
        if tile.class_name is not None:  # its label share within its band's bounds
            band = band_of_class[tile.class_name]
            assert (
                band_share(tile, band, -slack) - 1 / 32
                <= tile.label_share
                <= band_share(tile, band, slack) + 1 / 32
            ), tile
        for name, band in band_of_class.items():  # most of the tile surely in one band: its class
            if band_share(tile, band, -slack) > 0.5:
                assert tile.class_name == name, tile
                sure[name] += 1
                if tile.nodata_pixels == 0:
                    assert tile.reject_reason is None and tile.label_share == 1.0, tile
        if tile.nodata_pixels == 0 and band_share(tile, 6, -slack) == 1:
            assert tile.reject_reason == rejects.DROPPED_DOMINANT, tile  # the water band
        if tile.nodata_pixels == 0 and tile.minx >= x0 + 7 * 3 * 32 + slack:
            assert tile.reject_reason == rejects.OUTSIDE_LABELS, tile
    # bands 1-6 lie under the scene (band 0 ends 5 m east of the grid's west edge): each class on every row
    n_rows = candidates.row.nunique()
    assert sure == {"Developed": 0, **{name: n_rows for name in CLASSES[1:]}}, sure
    assert set(candidates.loc[candidates.reject_reason.isna(), "class_name"]) == set(CLASSES[1:])


# ------------------------------------------------------------------ end to end


def test_pipeline_end_to_end_is_idempotent(project_copy):
    write_scene_set(project_copy / "data", tile_size=224, tile_rows=1)
    stale = project_copy / "data" / "05_model_input" / "train" / "Forest" / "stale_tile.png"
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stale)

    run_pipeline(project_copy, "data_preparation")
    data = project_copy / "data"
    manifest = pd.read_parquet(data / "05_model_input" / "tile_manifest.parquet")
    assert list(manifest.columns[:16]) == nodes.MANIFEST_COLUMNS[:16]
    assert not stale.exists()
    pngs = sorted(
        str(p.relative_to(data / "05_model_input").with_suffix(""))
        for p in (data / "05_model_input").rglob("*.png")
    )
    assert pngs == sorted(manifest.partition)
    assert set(manifest.split) == {"train", "validation"}
    assert set(manifest.loc[manifest.split == "validation", "region"]) == {"middlesex"}
    counts = manifest.groupby(["split", "class_name"]).size()
    assert counts.index.get_level_values(1).nunique() == 6
    assert (counts.groupby(level="split").nunique() == 1).all()  # balanced within each split

    first = manifest.iloc[0]
    image = Image.open(data / "05_model_input" / f"{first.partition}.png")
    assert image.mode == "RGB" and image.size == (224, 224)
    source = GeoTiffDataset(filepath=str(data / "01_raw" / "naip" / f"{first.scene}.tif")).load()
    window = ((first.row_off, first.row_off + 224), (first.col_off, first.col_off + 224))
    np.testing.assert_array_equal(
        np.asarray(image), source.read(window=window, indexes=[1, 2, 3]).transpose(1, 2, 0)
    )

    report = json.loads((data / "08_reporting" / "preparation_report.json").read_text())
    candidates = pd.read_parquet(data / "02_intermediate" / "tile_candidates.parquet")
    assert report["tiles_seen"] == len(candidates) == sum(v["seen"] for v in report["per_scene"].values())
    assert set(report["rejected"]) == set(rejects.REJECT_REASONS)
    assert report["tiles_seen"] == report["usable"] + sum(report["rejected"].values())
    assert report["kept_total"] == len(manifest) == report["usable"] - report["balanced_out"]
    assert (
        report["kept"]["validation"]
        == manifest[manifest.split == "validation"].class_name.value_counts().reindex(CLASSES).to_dict()
    )
    assert (data / "08_reporting" / "preparation_report.png").stat().st_size > 10_000

    run_pipeline(project_copy, "data_preparation")
    pd.testing.assert_frame_equal(
        manifest, pd.read_parquet(data / "05_model_input" / "tile_manifest.parquet")
    )
    again = sorted(
        str(p.relative_to(data / "05_model_input").with_suffix(""))
        for p in (data / "05_model_input").rglob("*.png")
    )
    assert again == pngs


# ------------------------------------------------------------------ the NLCD legend and size limits


def nlcd_with_code(scene_root: Path, folder: Path, code: int, x: float, y: float) -> None:
    """``folder`` gets the scene set's NLCD rasters, nlcd_2011 with ``code`` in the 30 m cell under
    the UTM point (x, y)."""
    folder.mkdir()
    for year in (2011, 2016):
        source = GeoTiffDataset(filepath=str(scene_root / "01_raw" / "nlcd" / f"nlcd_{year}.tif")).load()
        with source.open() as dataset:
            codes = dataset.read()
            if year == 2011:
                (ax,), (ay,) = transform_points(UTM, ALBERS, [x], [y])
                codes[0][dataset.index(ax, ay)] = code
        write_nodata = GeoRaster(codes, source.crs, source.transform, nodata=source.nodata)
        GeoTiffDataset(filepath=str(folder / f"nlcd_{year}.tif")).save(write_nodata)


def test_nlcd_codes_outside_the_legend_give_no_tile_and_are_named(scene_root, tmp_path, spark):
    x0, y0 = ORIGINS["middlesex"]
    nlcd_with_code(scene_root, tmp_path / "nlcd", 200, x0 + 48, y0 - 16)  # middle of tile (0, 1)
    naip, nlcd = loaders(scene_root / "01_raw" / "naip"), loaders(tmp_path / "nlcd")
    # above the budget: the run stops when planned, naming the code and its pixels
    with pytest.raises(ValueError, match=r"'middlesex_2012'.*nlcd_2011.*outside the legend.*code 200: 1 px"):
        nodes.plan_scenes(naip, nlcd, LAND_COVER, TILING)
    # below it: tiles on the code have no class, and the report counts it
    land_cover = {**LAND_COVER, "max_unknown_fraction": 0.05}
    plans = nodes.plan_scenes(naip, nlcd, land_cover, TILING)
    candidates = nodes.label_tiles(plans, OPTIONS)
    on_code = candidates[candidates["unknown_pixels"] > 0]
    assert set(on_code["scene"]) == {"middlesex_2012"} and 1 <= len(on_code) <= 4
    assert set(on_code["reject_reason"]) == {rejects.UNKNOWN_CODES}
    assert (0, 1) in set(zip(on_code["row"], on_code["col"]))
    manifest = pd.DataFrame(columns=["split", "class_name", "scene", "region"])
    report = nodes.summarise_preparation(candidates, manifest, land_cover, TILING, OPTIONS, plans)
    assert report["rejected"][rejects.UNKNOWN_CODES] == len(on_code)
    assert report["unknown_nlcd_codes"] == {
        "middlesex_2012": {
            "nlcd": "nlcd_2011",
            "pixels": plans["middlesex_2012"].label_pixels,
            "codes": {"200": 1},
        }
    }


def bomb(path: Path, side: int = 2**20, count: int = 3) -> None:
    """A tiled, sparse GeoTIFF (under 1 MB) whose header claims ``side`` x ``side`` px."""
    import rasterio

    x0, y0 = ORIGINS["middlesex"]
    profile = {"driver": "GTiff", "width": side, "height": side, "count": count, "dtype": "uint8"}
    with rasterio.open(
        path,
        "w",
        **profile,
        crs=UTM,
        transform=Affine(1, 0, x0, 0, -1, y0),
        tiled=True,
        blockxsize=4096,
        blockysize=4096,
        compress="deflate",
        BIGTIFF="YES",
        SPARSE_OK="TRUE",
    ) as dataset:
        dataset.write(np.full((count, 16, 16), 90, np.uint8), window=((0, 16), (0, 16)))


def test_a_header_bomb_is_refused_when_planned_in_seconds_with_flat_memory(scene_root, tmp_path):
    import time
    import tracemalloc

    (tmp_path / "naip").mkdir()
    bomb(tmp_path / "naip" / "middlesex_2016.tif")
    assert (tmp_path / "naip" / "middlesex_2016.tif").stat().st_size < 2**20
    nlcd = loaders(scene_root / "01_raw" / "nlcd")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"'middlesex_2016' declares 1048576 x 1048576 px.*max_pixels"):
            nodes.plan_scenes(loaders(tmp_path / "naip"), nlcd, LAND_COVER, TILING)
        seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 5 and peak < 20 * 2**20, (seconds, peak)
    # a smaller claim that passes max_pixels still has too many tiles for the driver
    bomb(tmp_path / "naip" / "middlesex_2016.tif", side=2**17)
    with pytest.raises(ValueError, match=r"'middlesex_2016'.* 16777216 tiles.*max_tiles = 4000000"):
        nodes.plan_scenes(loaders(tmp_path / "naip"), nlcd, LAND_COVER, {**TILING, "tile_size": 32})
    # an NLCD header bomb is refused too, naming the raster
    (tmp_path / "nlcd").mkdir()
    bomb(tmp_path / "nlcd" / "nlcd_2016.tif", count=1)
    with pytest.raises(ValueError, match=r"NLCD raster 'nlcd_2016' declares 1048576 x 1048576 px"):
        nodes.plan_scenes(
            loaders(scene_root / "01_raw" / "naip"), loaders(tmp_path / "nlcd"), LAND_COVER, TILING
        )
