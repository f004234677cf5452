"""development_inference's probability rasters (issue 31, "Probability maps"): per region one uint8 band
per model class probability plus the change probability, round(p * 250) with GDAL scale 1/250 and nodata
255, on the class rasters' grid, saved as Cloud Optimized GeoTIFFs with a QGIS style; and their county
mosaic. Built from a small synthetic tile table and region plans, saved as the catalog saves them."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from affine import Affine
from kedro_datasets.partitions import PartitionedDataset
from PIL import TiffImagePlugin
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from landuse_kedro.datasets import GeoTiffDataset
from landuse_kedro.datasets.geotiff import ScaledRaster
from landuse_kedro.pipelines.development_inference.geo import colour_table
from landuse_kedro.pipelines.development_inference.inference import RegionPlan
from landuse_kedro.pipelines.development_inference.maps import (
    class_rasters,
    mosaic_probability_rasters,
    probability_rasters,
)
from landuse_kedro.pipelines.development_inference.params import map_classes
from landuse_kedro.raster import Grid
from landuse_kedro.tiling import ScenePlan
from tests.helpers import LAND_COVER, PROJECT_ROOT

MODEL_CLASSES = list(LAND_COVER["classes"])  # Developed, Cultivated, Forest, Shrub, Barren, Herbaceous
BANDS = [f"prob_{name}" for name in MODEL_CLASSES] + ["change_probability"]
TILE, ROWS, COLS = 224, 3, 4
ORIGIN = (224 * 1340, 224 * 20982)  # tile corners on multiples of 224 m: mosaic cells line up exactly
FAILED, MASKED = (0, 1), (1, 2)  # (row, col) of a tile that failed to score and of a masked one
PROVENANCE = {
    "run_id": "run-42",
    "project_version": "1.2.3",
    "model": {"version": "7", "sha256": "ab" * 32, "precision": "float32"},
}


def _options(**overrides) -> dict:
    """The project's own ``params:development_inference``, for the regions asked."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_development_inference.yml").read_text())
    return conf["development_inference"] | {"older_naip_year": None} | overrides


def _plan(region: str, east_tiles: int = 0) -> RegionPlan:
    """A region whose newer scene lies ``east_tiles`` tiles east of ORIGIN, with partial tiles at its
    right and bottom edges (left out of the tile grid, as plan_regions leaves them)."""
    names = map_classes(LAND_COVER, _options())
    grid = Grid(
        CRS.from_epsg(26919),
        Affine(1, 0, ORIGIN[0] + east_tiles * TILE, 0, -1, ORIGIN[1]),
        COLS * TILE + 10,
        ROWS * TILE + 7,
    )
    scene = ScenePlan(
        key=f"{region}_2016",
        scene=None,
        grid=grid,
        tile_size=TILE,
        labels=None,
        lut=np.zeros(256, dtype=np.uint8),
        classes=tuple(names),
    )
    return RegionPlan(region, scene, None, colour_table(names, _options()["colours"]))


def _tiles(region: str, seed: int) -> pd.DataFrame:
    """One row per tile as classify_tiles gives them: seeded probabilities over the model classes, the
    older class cycling through from_classes and the others (and no label), FAILED without
    probabilities, MASKED with probabilities but no prediction."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(len(MODEL_CLASSES)), size=ROWS * COLS)
    rows, cols = np.divmod(np.arange(ROWS * COLS), COLS)
    older = ["Undeveloped", "Cultivated", "Developed", None]
    tiles = pd.DataFrame(
        {
            "tile_id": [f"{region}_2016_r{r:04d}_c{c:04d}" for r, c in zip(rows, cols, strict=True)],
            "region": region,
            "row": rows,
            "col": cols,
            "older_class": [older[i % len(older)] for i in range(ROWS * COLS)],
            "predicted_class": [
                MODEL_CLASSES[i] if i < 2 else "Undeveloped" for i in probabilities.argmax(1)
            ],
            **{f"prob_{name}": probabilities[:, i] for i, name in enumerate(MODEL_CLASSES)},
            "error": None,
            "crs": "EPSG:26919",
        }
    )
    failed = (tiles["row"] == FAILED[0]) & (tiles["col"] == FAILED[1])
    tiles.loc[failed, [f"prob_{name}" for name in MODEL_CLASSES]] = np.nan
    tiles.loc[failed, ["predicted_class", "error"]] = [None, "Read failed: block 3"]
    masked = (tiles["row"] == MASKED[0]) & (tiles["col"] == MASKED[1])
    tiles.loc[masked, "predicted_class"] = None
    tiles["smoothed_class"] = tiles["predicted_class"]
    return tiles


def _save(raster: ScaledRaster, path: Path) -> Path:
    """Saved as the catalog entry saves it (GeoTiffDataset, driver COG)."""
    GeoTiffDataset(filepath=str(path), save_args={"driver": "COG"}).save(raster)
    return path


def _gdal_scales(path: Path) -> list[float]:
    """The bands' scales as GDAL reads them, without rasterio: ``gdalinfo -json`` when installed, else
    the GeoTIFF's GDAL_METADATA tag (42112), where GDAL's GTiff driver keeps band scales."""
    if shutil.which("gdalinfo"):
        info = json.loads(
            subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True, check=True).stdout
        )
        return [band["scale"] for band in info["bands"]]
    with path.open("rb") as file:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(file.read(8))
        file.seek(ifd.next)
        ifd.load(file)
    items = ET.fromstring(ifd[42112]).iter("Item")
    scales = {int(item.get("sample")): float(item.text) for item in items if item.get("role") == "scale"}
    return [scales[sample] for sample in sorted(scales)]


@pytest.fixture
def region(tmp_path):
    """testville's probability raster saved as a COG, with its tile table and the class rasters of the
    same inputs; the table also holds otherville, which this run does not map."""
    tiles = pd.concat([_tiles("testville", 0), _tiles("otherville", 1)], ignore_index=True)
    plans = {"testville": _plan("testville"), "otherville": _plan("otherville", 3)}
    options = _options(regions=["testville"])
    rasters = probability_rasters(tiles, plans, PROVENANCE, LAND_COVER, options)
    assert list(rasters) == ["testville"]
    path = _save(rasters["testville"], tmp_path / "testville" / "probabilities.tif")
    classes = class_rasters(tiles, plans, PROVENANCE, options)["testville/predicted"]
    return path, tiles[tiles["region"] == "testville"], classes


def test_one_band_per_model_class_then_the_change_band_named(region):
    path, _, _ = region
    with rasterio.open(path) as src:
        assert src.count == len(MODEL_CLASSES) + 1
        assert list(src.descriptions) == BANDS
        assert set(src.dtypes) == {"uint8"} and src.nodata == 255


def test_values_are_round_p_times_250_at_each_tiles_row_and_col(region):
    path, tiles, _ = region
    with rasterio.open(path) as src:
        pixels = src.read()
    checked = 0
    for tile in tiles.itertuples():
        if (tile.row, tile.col) in (FAILED, MASKED):
            continue
        for band, name in enumerate(MODEL_CLASSES):
            assert pixels[band, tile.row, tile.col] == round(getattr(tile, f"prob_{name}") * 250), (
                tile,
                name,
            )
            checked += 1
    assert checked == (ROWS * COLS - 2) * len(MODEL_CLASSES)
    # probabilities distinct enough that a transposed or shifted grid would not pass
    assert len(np.unique(pixels[0][pixels[0] != 255])) > 5


def test_failed_and_masked_tiles_are_nodata_in_every_band_as_in_the_class_raster(region):
    path, _, classes = region
    with rasterio.open(path) as src:
        pixels = src.read()
    for row, col in (FAILED, MASKED):
        assert (pixels[:, row, col] == 255).all(), (row, col)
    # exactly where the predicted class raster has nodata
    np.testing.assert_array_equal((pixels == 255).any(axis=0), classes.array[0] == 0)
    assert ((pixels == 255).all(axis=0) == (pixels == 255).any(axis=0)).all()


def test_change_band_is_to_class_probability_only_where_the_older_class_may_change(region):
    path, tiles, _ = region
    options = _options()
    from_classes = set(options["candidates"]["from_classes"])
    to_class = options["candidates"]["to_class"]
    with rasterio.open(path) as src:
        change = src.read(len(BANDS))
    scored = tiles[~tiles[["row", "col"]].apply(tuple, axis=1).isin([FAILED, MASKED])]
    eligible = scored["older_class"].isin(from_classes)
    assert eligible.any() and (~eligible).any()
    for tile in scored[eligible].itertuples():
        assert change[tile.row, tile.col] == round(getattr(tile, f"prob_{to_class}") * 250)
    assert (scored.loc[~eligible, f"prob_{to_class}"] > 0.002).all()  # so 0 is not their rounded value
    for tile in scored[~eligible].itertuples():  # older Developed, or no older label
        assert change[tile.row, tile.col] == 0, tile


def test_same_grid_as_the_class_rasters(region):
    path, _, classes = region
    with rasterio.open(path) as src:
        assert src.transform == classes.transform
        assert src.crs == classes.crs
        assert (src.height, src.width) == classes.array.shape[1:] == (ROWS, COLS)
        assert src.transform * (0, 0) == ORIGIN and src.res == (TILE, TILE)


def test_scales_give_probabilities_to_rasterio_and_to_gdal(region):
    path, tiles, _ = region
    with rasterio.open(path) as src:
        assert src.scales == (1 / 250,) * len(BANDS)
        assert src.offsets == (0.0,) * len(BANDS)
        developed = src.read(1).astype(float) * src.scales[0] + src.offsets[0]
    tile = tiles.iloc[0]
    assert developed[tile["row"], tile["col"]] == pytest.approx(tile["prob_Developed"], abs=0.002)
    assert _gdal_scales(path) == pytest.approx([0.004] * len(BANDS))
    # kept inside the GeoTIFF: a copy of the .tif alone still reads as probabilities
    assert not path.with_name(path.name + ".aux.xml").exists()


def test_tags_name_region_years_run_and_model(region):
    path, _, _ = region
    options = _options()
    with rasterio.open(path) as src:
        tags = src.tags()
    assert tags["region"] == "testville" and tags["scene"] == "testville_2016"
    assert tags["older_nlcd_year"] == str(options["older_nlcd_year"])
    assert tags["newer_naip_year"] == str(options["newer_naip_year"])
    assert tags["run_id"] == "run-42" and tags["model_sha256"] == "ab" * 32 and tags["model_version"] == "7"
    assert "Developed" in tags["change_probability"] and "Cultivated" in tags["change_probability"]


def test_is_a_valid_cog_with_a_qgis_ramp_on_the_change_band(region):
    path, _, _ = region
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    assert valid and not errors, errors
    style = ET.parse(path.with_suffix(".qml")).getroot()
    renderer = style.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert renderer.get("band") == str(len(BANDS))
    assert (float(renderer.get("classificationMin")), float(renderer.get("classificationMax"))) == (0, 1)
    items = [(float(item.get("value")), item.get("color")) for item in renderer.iter("item")]
    assert items == [(0.0, "#ffffff"), (1.0, "#d7191c")]


def test_large_rasters_get_overviews_that_stay_probabilities(tmp_path):
    """Past 512 pixels the COG gets overviews; GDAL's default for them (cubic) would invent codes above
    250 (p > 1) and nodata: a ScaledRaster's are nearest neighbour, codes of the raster itself."""
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((1, 600, 600)) < 0.5, 0, 250).astype(np.uint8)
    codes[:, :40, :40] = 255
    raster = ScaledRaster(
        codes, "EPSG:26919", Affine(224, 0, ORIGIN[0], 0, -224, ORIGIN[1]), nodata=255, scales=(0.004,)
    )
    path = _save(raster, tmp_path / "big.tif")
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
        overview = src.read(1, out_shape=(300, 300))
    assert set(np.unique(overview)) <= {0, 250, 255}


def test_only_a_model_class_can_be_the_change_class():
    tiles = _tiles("testville", 0)
    options = _options(regions=["testville"])
    options["candidates"] = options["candidates"] | {
        "to_class": "Undeveloped"
    }  # a map class, not a model one
    with pytest.raises(ValueError, match=r"no column \['prob_Undeveloped'\].*model class"):
        probability_rasters(tiles, {"testville": _plan("testville")}, PROVENANCE, LAND_COVER, options)


def test_a_tile_table_short_of_the_grid_is_refused():
    tiles = _tiles("testville", 0).iloc[:-1]
    with pytest.raises(ValueError, match=r"11 tiles of testville, the scene's grid 3 x 4"):
        probability_rasters(
            tiles, {"testville": _plan("testville")}, PROVENANCE, LAND_COVER, _options(regions=["testville"])
        )


# --- the county mosaic -------------------------------------------------------------------------


@pytest.fixture
def saved_regions(tmp_path):
    """testville, and otherville three tiles east (their last and first columns overlap), saved in a
    partitioned folder as the catalog saves them; an older run's region lies there too."""
    tiles = pd.concat(
        [_tiles("testville", 0), _tiles("otherville", 1), _tiles("oldtown", 2)], ignore_index=True
    )
    plans = {
        "testville": _plan("testville"),
        "otherville": _plan("otherville", 3),
        "oldtown": _plan("oldtown", 9),
    }
    folder = PartitionedDataset(
        path=str(tmp_path / "regions"),
        dataset={"type": "landuse_kedro.datasets.GeoTiffDataset", "save_args": {"driver": "COG"}},
        filename_suffix="/probabilities.tif",
    )
    folder.save(probability_rasters(tiles, plans, PROVENANCE, LAND_COVER, _options(regions=["oldtown"])))
    rasters = probability_rasters(
        tiles, plans, PROVENANCE, LAND_COVER, _options(regions="testville otherville")
    )
    folder.save(rasters)
    return folder.load(), rasters


def test_mosaic_takes_each_cell_whole_from_the_first_region_with_data(saved_regions, tmp_path):
    partitions, rasters = saved_regions
    assert set(partitions) == {"testville", "otherville", "oldtown"}
    options = _options(regions=["testville", "otherville"], mosaic_crs="EPSG:26919")
    mosaic = mosaic_probability_rasters(partitions, PROVENANCE, options)
    testville, otherville = rasters["testville"].array, rasters["otherville"].array
    assert mosaic.array.shape == (len(BANDS), ROWS, 3 + COLS)  # oldtown, 9 tiles east, is not in it
    assert mosaic.transform == rasters["testville"].transform
    # testville's own columns as they are, its failed and masked tiles still nodata
    np.testing.assert_array_equal(mosaic.array[:, :, :3], testville[:, :, :3])
    assert (mosaic.array[:, FAILED[0], FAILED[1]] == 255).all()
    assert (mosaic.array[:, MASKED[0], MASKED[1]] == 255).all()
    # the overlap column is testville's (listed first), not otherville's
    assert (testville[:, :, 3] != otherville[:, :, 0]).any()
    np.testing.assert_array_equal(mosaic.array[:, :, 3], testville[:, :, 3])
    np.testing.assert_array_equal(mosaic.array[:, :, 4:], otherville[:, :, 1:])

    path = _save(mosaic, tmp_path / "county" / "probabilities.tif")
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        assert list(src.descriptions) == BANDS
        assert src.scales == (1 / 250,) * len(BANDS) and src.nodata == 255
        assert src.tags()["regions"] == "testville otherville"
    assert path.with_suffix(".qml").exists()


def test_overlap_nodata_cell_is_filled_by_the_next_region_in_all_bands(tmp_path):
    """testville's failed tile in the overlap column: otherville's tile there gives all its bands."""
    tiles = pd.concat([_tiles("testville", 0), _tiles("otherville", 1)], ignore_index=True)
    gap = (tiles["region"] == "testville") & (tiles["row"] == 2) & (tiles["col"] == 3)
    tiles.loc[gap, [f"prob_{name}" for name in MODEL_CLASSES]] = np.nan
    tiles.loc[gap, ["predicted_class", "error"]] = [None, "Read failed"]
    plans = {"testville": _plan("testville"), "otherville": _plan("otherville", 3)}
    options = _options(regions=["testville", "otherville"], mosaic_crs="EPSG:26919")
    rasters = probability_rasters(tiles, plans, PROVENANCE, LAND_COVER, options)
    paths = {name: _save(raster, tmp_path / name / "probabilities.tif") for name, raster in rasters.items()}
    partitions = {name: GeoTiffDataset(filepath=str(path)).load for name, path in paths.items()}
    mosaic = mosaic_probability_rasters(partitions, PROVENANCE, options)
    assert (rasters["testville"].array[:, 2, 3] == 255).all()
    assert (rasters["otherville"].array[:, 2, 0] != 255).all()
    np.testing.assert_array_equal(mosaic.array[:, 2, 3], rasters["otherville"].array[:, 2, 0])


def test_mosaic_in_another_crs_invents_no_probability(saved_regions):
    """Reprojected to CONUS Albers by nearest neighbour: every value is one a region's tile has."""
    partitions, rasters = saved_regions
    options = _options(regions=["testville", "otherville"], mosaic_crs="EPSG:5070")
    mosaic = mosaic_probability_rasters(partitions, PROVENANCE, options)
    assert CRS.from_user_input(mosaic.crs).to_epsg() == 5070
    for band in range(len(BANDS)):
        sources = set(np.unique(rasters["testville"].array[band])) | set(
            np.unique(rasters["otherville"].array[band])
        )
        values = set(np.unique(mosaic.array[band]))
        assert len(values - {255}) > 5
        assert values <= sources | {255}, band


def test_mosaic_refuses_regions_with_different_bands(saved_regions, tmp_path):
    partitions, _ = saved_regions
    odd = ScaledRaster(
        np.zeros((2, ROWS, COLS), np.uint8),
        "EPSG:26919",
        _plan("elsewhere").newer.grid.transform @ Affine.scale(TILE),
        nodata=255,
        descriptions=("prob_A", "change_probability"),
    )
    partitions = dict(
        partitions, elsewhere=GeoTiffDataset(filepath=str(_save(odd, tmp_path / "odd.tif"))).load
    )
    with pytest.raises(ValueError, match="different bands"):
        mosaic_probability_rasters(partitions, PROVENANCE, _options(regions=["testville", "elsewhere"]))
