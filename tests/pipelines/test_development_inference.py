"""development_inference: the map rules on small grids, the georeferencing of its outputs, bad
inputs, and end-to-end runs on two tiny synthetic regions (together, then one alone); on the first
run, the analyst's outputs: reference sample, GeoParquet table and the STAC catalog (it opens in
pystac, every asset href names the file whose size and checksum it gives, the legend is the QGIS one,
and a STAC API, ``rustac serve``, serving the items finds a region by its box)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import fsspec
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import yaml
from affine import Affine
from onnx import TensorProto, helper
from PIL import Image
from pystac_client import Client
from rasterio.crs import CRS
from rasterio.warp import transform as warp
from rasterio.warp import transform_bounds

from landuse_kedro.classes import DROPPED, NO_LABEL, UNKNOWN
from landuse_kedro.datasets import FileDigestsDataset, GeoTiffDataset
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.pipelines.development_inference.analysis import (
    NODATA,
    agreement,
    change_candidates,
    class_summary,
    smooth_classes,
    to_grid,
)
from landuse_kedro.pipelines.development_inference.geo import (
    candidates_geojson,
    colour_table,
    tile_grid_transform,
)
from landuse_kedro.pipelines.development_inference.inference import newer_scene, plan_regions
from landuse_kedro.pipelines.development_inference.maps import neighbourhood_rgb
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    older_label_lookup,
    region_names,
)
from landuse_kedro.pipelines.development_inference.reporting import (
    CANDIDATE_PROPERTIES,
    check_tile_failures,
)
from landuse_kedro.pipelines.development_inference.stac import COUNTY, REGIONS, stac_catalog
from landuse_kedro.raster import GeoRaster
from landuse_kedro.tiling import tiling_grid
from tests.helpers import (
    LAND_COVER,
    PROJECT_ROOT,
    corrupt_block,
    load_catalog,
    make_project_copy,
    run_pipeline,
    stop_process,
)
from tests.stac_server import stac_api

CLASSES = ["Developed", "Cultivated", "Undeveloped"]
D, C, U = 1, 2, 3


# --- smoothing ---------------------------------------------------------------------------------


def test_lone_tile_surrounded_by_another_class_is_smoothed_away():
    grid = np.full((3, 3), U, dtype=np.uint8)
    grid[1, 1] = D
    assert smooth_classes(grid, 3, centre_weight=2)[1, 1] == U


def test_heavier_centre_keeps_a_tile_that_enough_neighbours_support():
    grid = np.full((3, 3), U, dtype=np.uint8)
    grid[1, 1] = D
    grid[0, 0] = D  # centre: own 2 + 1 = 3 votes vs 7 for U at weight 2 ...
    assert smooth_classes(grid, 3, centre_weight=2)[1, 1] == U
    grid[0, :] = D
    grid[1, 0] = D  # ... own 2 + 4 = 6 vs 4 for U
    assert smooth_classes(grid, 3, centre_weight=2)[1, 1] == D
    # at weight 9 the centre outvotes any neighbourhood
    lone = np.full((3, 3), U, dtype=np.uint8)
    lone[1, 1] = D
    assert smooth_classes(lone, 3, centre_weight=9)[1, 1] == D


def test_smoothing_ties_keep_the_centre_class():
    grid = np.array([[D, D, D], [U, C, U], [U, U, 0]], dtype=np.uint8)
    # centre C: weight 2; D: 3 votes; U: 4 votes -> U wins
    assert smooth_classes(grid, 3, centre_weight=2)[1, 1] == U
    # weight 4: C 4 votes ties U 4 -> keeps C
    assert smooth_classes(grid, 3, centre_weight=4)[1, 1] == C


def test_smoothing_keeps_nodata_and_nodata_casts_no_vote():
    grid = np.array([[0, 0, 0], [0, D, 0], [0, 0, U]], dtype=np.uint8)
    smoothed = smooth_classes(grid, 3, centre_weight=2)
    assert smoothed[1, 1] == D  # 2 votes vs 1: the eight nodata neighbours did not vote
    assert (smoothed[grid == 0] == 0).all()


def test_uniform_grid_is_unchanged_by_smoothing():
    grid = np.full((4, 5), C, dtype=np.uint8)
    np.testing.assert_array_equal(smooth_classes(grid, 3, centre_weight=2), grid)


# --- tables ------------------------------------------------------------------------------------


def _tiles() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tile_id": ["t0", "t1", "t2", "t3", "t4", "t5"],
            "row": [0, 0, 0, 1, 1, 1],
            "col": [0, 1, 2, 0, 1, 2],
            "older_class": ["Undeveloped", "Undeveloped", "Cultivated", "Developed", "Undeveloped", None],
            "predicted_class": [
                "Developed",
                "Developed",
                "Developed",
                "Developed",
                "Undeveloped",
                "Developed",
            ],
            "prob_Developed": [0.95, 0.7, 0.99, 0.9, 0.1, 0.99],
            "older_share": [0.55, 1.0, 0.9, 1.0, 1.0, 0.0],
        }
    )


def test_to_grid_places_classes_and_nodata():
    grid = to_grid(_tiles(), "older_class", {name: code for code, name in enumerate(CLASSES, 1)})
    np.testing.assert_array_equal(grid, [[U, U, C], [D, U, NODATA]])


def test_candidates_are_older_undeveloped_newer_developed_above_threshold_ranked():
    ranked = change_candidates(_tiles(), ["Undeveloped"], "Developed", 0.6)
    assert ranked["tile_id"].tolist() == ["t0", "t1"]
    assert ranked["rank"].tolist() == [1, 2]
    assert ranked["change_probability"].tolist() == [0.95, 0.7]
    assert change_candidates(_tiles(), ["Undeveloped"], "Developed", 0.8)["tile_id"].tolist() == ["t0"]
    both = change_candidates(_tiles(), ["Undeveloped", "Cultivated"], "Developed", 0.6)
    assert both["tile_id"].tolist() == ["t2", "t0", "t1"]
    clear = change_candidates(_tiles(), ["Undeveloped", "Cultivated"], "Developed", 0.6, min_older_share=0.6)
    assert clear["tile_id"].tolist() == ["t2", "t1"]  # t0 was Undeveloped on only 55% of the tile


def test_no_candidate_gives_an_empty_table():
    ranked = change_candidates(_tiles(), ["Undeveloped"], "Developed", 0.999)
    assert ranked.empty and "change_probability" in ranked.columns and "rank" in ranked.columns


def test_agreement_counts_only_tiles_with_both_labels():
    result = agreement(_tiles(), CLASSES)
    assert result["compared_tiles"] == 5
    assert result["tiles_without_older_label"] == 1
    assert result["accuracy"] == pytest.approx(2 / 5)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 5
    assert matrix[2, 0] == 2  # older Undeveloped predicted Developed
    assert matrix[0, 0] == 1


def test_summary_counts_every_tile_including_nodata():
    tiles = _tiles().assign(smoothed_class=["Developed"] * 5 + [None])
    table = class_summary(
        tiles, CLASSES, {"older": "older_class", "predicted": "predicted_class", "smoothed": "smoothed_class"}
    )
    assert table["class"].tolist() == CLASSES + ["nodata"]
    for title in ("older", "predicted", "smoothed"):
        assert table[f"{title}_tiles"].sum() == len(tiles)
        assert table[f"{title}_percent"].sum() == pytest.approx(100.0, abs=0.05)  # rounded to 0.01
    assert table.set_index("class").loc["nodata", "older_tiles"] == 1
    assert table.set_index("class").loc["Developed", "predicted_tiles"] == 5


# --- georeferencing ----------------------------------------------------------------------------


def test_tile_grid_transform_maps_grid_cells_to_tile_bounds():
    scene = Affine(0.6, 0, 300_000.0, 0, -0.6, 4_700_000.0)
    transform = tile_grid_transform(scene, row_off=10, col_off=20, tile_size=224)
    # pixel (row 2, col 3) of the class raster is the tile at scene offset (10 + 2*224, 20 + 3*224)
    left, top = transform @ (3, 2)
    right, bottom = transform @ (4, 3)
    assert (left, top) == pytest.approx(scene @ (20 + 3 * 224, 10 + 2 * 224))
    assert (right, bottom) == pytest.approx(scene @ (20 + 4 * 224, 10 + 3 * 224))
    assert transform.a == pytest.approx(0.6 * 224) and transform.e == pytest.approx(-0.6 * 224)


def test_colour_table_has_transparent_nodata_and_needs_every_colour():
    table = colour_table(CLASSES, {"Developed": "red", "Cultivated": "white", "Undeveloped": "green"})
    assert table[NODATA][3] == 0
    assert table[1] == (255, 0, 0, 255) and table[2] == (255, 255, 255, 255)
    with pytest.raises(ValueError, match="Undeveloped"):
        colour_table(CLASSES, {"Developed": "red", "Cultivated": "white"})


def test_every_default_map_colour_stands_out_on_white():
    """QGIS's canvas and the README are white: a class drawn in white (the walkthrough's
    Cultivated) would vanish. WCAG contrast ratio against white of at least 1.5 for each class."""
    options = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_development_inference.yml").read_text())
    colours = options["development_inference"]["colours"]

    def luminance(rgb):
        linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    def contrast_with_white(rgb):
        return 1.05 / (luminance(rgb) + 0.05)

    # the rule can tell: the walkthrough's white Cultivated fails it, its red Developed passes
    assert contrast_with_white((255, 255, 255)) == pytest.approx(1.0)
    assert contrast_with_white((0xE4, 0x1A, 0x1C)) > 4
    table = colour_table(list(colours), colours)
    contrasts = {name: contrast_with_white(table[code][:3]) for code, name in enumerate(colours, start=1)}
    assert set(contrasts) == {"Developed", "Cultivated", "Undeveloped", "Water"}
    assert {name: ratio for name, ratio in contrasts.items() if ratio < 1.5} == {}, contrasts


def test_geojson_footprints_are_in_wgs84_and_carry_the_attributes():
    candidates = pd.DataFrame(
        {
            "region": ["essex"],
            "rank": [1],
            "tile_id": ["a"],
            "row": [np.int64(4)],
            "col": [7],
            "change_probability": [0.93],
            "older_class": ["Undeveloped"],
            "older_share": [0.8],
            "predicted_class": ["Developed"],
            "smoothed_class": [None],
            "minx": [330_000.0],
            "miny": [4_690_000.0],
            "maxx": [330_134.4],
            "maxy": [4_690_134.4],
            "crs": ["EPSG:26919"],
        }
    )
    collection = candidates_geojson(candidates, CANDIDATE_PROPERTIES, {"run_id": "r"})
    assert collection["provenance"] == {"run_id": "r"}
    feature = collection["features"][0]
    assert feature["id"] == "a"
    assert feature["properties"] == {
        "region": "essex",
        "rank": 1,
        "tile_id": "a",
        "row": 4,
        "col": 7,
        "change_probability": 0.93,
        "older_class": "Undeveloped",
        "older_share": 0.8,
        "predicted_class": "Developed",
        "smoothed_class": None,
    }
    assert type(feature["properties"]["row"]) is int  # numpy scalars would not serialise
    ring = np.array(feature["geometry"]["coordinates"][0])
    lons, lats = warp("EPSG:26919", "EPSG:4326", [330_000.0, 330_134.4], [4_690_000.0, 4_690_134.4])
    assert ring[:, 0].min() == pytest.approx(min(lons)) and ring[:, 0].max() == pytest.approx(max(lons))
    assert ring[:, 1].min() == pytest.approx(min(lats)) and ring[:, 1].max() == pytest.approx(max(lats))
    assert -72 < ring[0, 0] < -70 and 42 < ring[0, 1] < 43  # Massachusetts


# --- bad inputs --------------------------------------------------------------------------------


def _fake_scene(crs: str):
    return lambda: SimpleNamespace(crs=CRS.from_user_input(crs))


def test_region_without_newer_scene_names_what_exists():
    scenes = {"essex_2016": _fake_scene("EPSG:26919"), "middlesex_2012": _fake_scene("EPSG:26919")}
    with pytest.raises(ValueError, match=r"middlesex_2016.*has the years \[2012\]"):
        newer_scene(scenes, "middlesex", {"newer_naip_year": 2016}, {"tile_size": 224})


def test_a_mistyped_region_lists_the_region_names():
    scenes = {"essex_2016": _fake_scene("EPSG:26919"), "middlesex_2012": _fake_scene("EPSG:26919")}
    with pytest.raises(ValueError, match=r"Unknown region\(s\) 'esex'.*regions essex, middlesex\."):
        plan_regions(
            scenes, {}, LAND_COVER, {"tile_size": 224}, {"regions": ["esex"], "newer_naip_year": 2016}
        )


def test_region_with_scenes_in_different_crss_is_refused():
    scenes = {"worcester_2012": _fake_scene("EPSG:26918"), "worcester_2016": _fake_scene("EPSG:26919")}
    with pytest.raises(ValueError, match="different CRSs"):
        newer_scene(scenes, "worcester", {"newer_naip_year": 2016}, {"tile_size": 224})


def test_older_label_lookup_regroups_nlcd_codes():
    land_cover = {
        "classes": ["Developed", "Cultivated", "Forest"],
        "nlcd_to_class": {"Developed": [21, 22], "Cultivated": [82], "Forest": [41]},
        "three_class": {"Developed": "Developed", "Cultivated": "Cultivated"},
        "three_class_other": "Undeveloped",
    }
    masked = older_label_lookup(land_cover, {"water": "mask"})
    assert [masked[code] for code in (21, 22, 82, 41)] == [0, 0, 1, 2]
    assert masked[11] == masked[12] == DROPPED and masked[0] == masked[250] == NO_LABEL
    # codes outside this legend (95 is not in this table) are never the catch-all Undeveloped
    assert masked[95] == masked[200] == UNKNOWN
    kept = older_label_lookup({**land_cover, "water_codes": [11]}, {"water": "keep"})
    assert kept[11] == 3 and kept[12] == UNKNOWN  # Water, the fourth map class; 12 left the legend
    with pytest.raises(ValueError, match="moved to land_cover.water_codes"):
        older_label_lookup(land_cover, {"water": "mask", "water_codes": [11]})


def test_unknown_water_mode_is_refused():
    land_cover = {
        "classes": ["Developed", "Forest"],
        "three_class": {"Developed": "Developed"},
        "three_class_other": "Undeveloped",
    }
    assert map_classes(land_cover, {"water": "keep"})[-1] == "Water"
    with pytest.raises(ValueError, match="water"):
        map_classes(land_cover, {"water": "drop"})


def test_too_many_failed_tiles_fail_the_run_naming_the_reasons():
    def report(tiles, failed, masked, reasons):
        return lambda: {
            "tiles": tiles,
            "predicted_tiles": tiles - failed - masked,
            "failed_tiles": failed,
            "masked_tiles": masked,
            "failure_reasons": reasons,
        }

    reason = "cannot read window of abfs://naip/a.tif: RasterioIOError: Read failed"
    reports = {
        "a": report(60, 6, 20, {reason: 6}),  # masked tiles are not failures
        "b": report(40, 1, 0, {"other: y": 1}),
        "earlier": report(1, 1, 0, {"stale": 1}),  # not this run's region
        "blank": report(9, 0, 9, {}),  # every tile masked: an empty map
    }
    options = {"regions": ["a", "b"]}
    check_tile_failures(reports, {"max_failed_fraction": 0.1}, options)  # 7% is tolerated at 10%
    # the reasons are grouped by cause, whole: a URL's colon does not cut them
    with pytest.raises(RuntimeError, match=rf"7 of 100 tiles failed.*6 x {reason}; 1 x other: y"):
        check_tile_failures(reports, {"max_failed_fraction": 0.05}, options)
    with pytest.raises(ValueError, match=r"No saved outputs for region\(s\) \['c'\]"):
        check_tile_failures(reports, {"max_failed_fraction": 0.1}, {"regions": ["a", "c"]})
    with pytest.raises(
        RuntimeError, match=r"No tile has a prediction in region\(s\).*'blank': '9 tiles: 0 failed, 9 masked'"
    ):
        check_tile_failures(reports, {"max_failed_fraction": 1.0}, {"regions": ["a", "blank"]})


def test_regions_are_a_list_or_names_separated_by_spaces():
    assert region_names({"regions": ["essex", "norfolk"]}) == ["essex", "norfolk"]
    assert region_names({"regions": "essex  norfolk"}) == [
        "essex",
        "norfolk",
    ]  # --params regions="essex norfolk"
    assert region_names({"regions": "essex"}) == ["essex"]
    for wrong in ([], ["essex", "essex"], ""):
        with pytest.raises(ValueError, match="distinct regions"):
            region_names({"regions": wrong})


# --- end to end on a synthetic region ----------------------------------------------------------
#
# A 3 x 4 tile region (32 px tiles, plus partial edge tiles that must be left out), painted per
# tile: F forest green, D developed red, W water blue, C cultivated tan. The older NLCD says forest
# where 2016 shows red at (0, 2) and (1, 1): the two true changes. (2, 3) is also a change but its
# block of the GeoTIFF is corrupted, so it must come out as a failed, nodata tile.

TILE = 32
ORIGIN = (300_000.0, 4_700_000.0)
NEWER = ["FFDD", "FDFW", "CFFD"]
OLDER = ["FFFD", "FFFW", "CFFF"]
NLCD = ["4 mix 4 21", "4 4 4 11", "82 4 4 4"]  # 4 -> 41 deciduous forest
# "mix": columns of 21 21 21 41 41 52 52 71 -> Developed is the most frequent NLCD class (3/8) but
# Undeveloped the most frequent map class (5/8): the older label is the plurality of the map classes.
MIX = [21, 21, 21, 41, 41, 52, 52, 71]
COLOURS = {"F": (40, 150, 40), "D": (200, 60, 60), "W": (30, 60, 150), "C": (220, 200, 120)}
CORRUPTED = (2, 3)
HOLE = (1, 0)  # a forest tile with 9 pixels of black fill, no nodata declared: masked, never a prediction
# (2, 0): older Cultivated, and the colour rule calls the tan tile Developed (red beats green).
EXPECTED_CANDIDATES = [
    "testville_2016_r0000_c0002",
    "testville_2016_r0001_c0001",
    "testville_2016_r0002_c0000",
]
# otherville: the same 2016 scene 700 m east, all forest in the NLCD and no 2012 scene (its gallery
# shows the older labels): every red or tan tile is a candidate.
OTHERVILLE_OFFSET = 700
# ... but its red tile (0, 3) lies on NLCD code 200, outside the legend: no older class, no candidate.
UNKNOWN_CODE_TILE = (0, 3)
OTHERVILLE_CANDIDATES = [
    "otherville_2016_r0000_c0002",
    "otherville_2016_r0001_c0001",
    "otherville_2016_r0002_c0000",
    "otherville_2016_r0002_c0003",
]


def _scene(layout: list[str], hole: tuple[int, int] | None = None, east: float = 0.0):
    """4-band scene painted per tile, declaring no nodata (as NAIP); ``hole``: a tile with a few
    pixels of black fill (0 in every band: no image data); ``east``: metres east of testville."""
    height, width = len(layout) * TILE + 7, len(layout[0]) * TILE + 10  # partial tiles at the edges
    pixels = np.zeros((4, height, width), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for row, line in enumerate(layout):
        for col, key in enumerate(line):
            block = np.asarray(COLOURS[key] + (90,), dtype=np.int16)[:, None, None]
            noise = rng.integers(-5, 6, size=(4, TILE, TILE))
            pixels[:, row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE] = np.clip(
                block + noise, 1, 255
            )
    if hole is not None:
        pixels[:, hole[0] * TILE + 3 : hole[0] * TILE + 6, hole[1] * TILE + 3 : hole[1] * TILE + 6] = 0
    return GeoRaster(pixels, "EPSG:26919", Affine(1, 0, ORIGIN[0] + east, 0, -1, ORIGIN[1]))


def _nlcd():
    """NLCD over both regions: testville painted per tile as NLCD says, forest elsewhere."""
    size, margin = 4, 16  # 4 m pixels aligned with the tiles, 16 m beyond the scenes
    codes = np.full((40, (OTHERVILLE_OFFSET + 200) // size), 41, dtype=np.uint8)
    for r in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            row, col = (r * size - margin) // TILE, (c * size - margin) // TILE
            if 0 <= row < len(NLCD) and 0 <= col < 4:
                token = NLCD[row].split()[col]
                code = MIX[(c * size - margin) % TILE // size] if token == "mix" else int(token)
                codes[r, c] = 41 if code == 4 else code
    row, col = UNKNOWN_CODE_TILE  # 8 x 8 NLCD pixels: one otherville tile
    x0, y0 = (OTHERVILLE_OFFSET + col * TILE + margin) // size, (row * TILE + margin) // size
    codes[y0 : y0 + TILE // size, x0 : x0 + TILE // size] = 200
    return GeoRaster(
        codes[None], "EPSG:26919", Affine(size, 0, ORIGIN[0] - margin, 0, -size, ORIGIN[1] + margin)
    )


def colour_rule_model():
    """An ONNX model with the scorer's contract (uint8 RGB in, 6 probabilities out): mean colour,
    Developed when red dominates green, Forest when green dominates red. Built with onnx.helper,
    no TensorFlow, so the test is fast and its predictions are known. Its weights are int8 with a
    DequantizeLinear (exact: +-127 x 0.1/127), as in a QDQ export, so the model is an int8 one."""
    weights = np.zeros((3, 6), dtype=np.int8)
    weights[:, 0] = [127, -127, 0]  # Developed: R - G
    weights[:, 2] = [-127, 127, 0]  # Forest: G - R
    bias = np.array([0, -5, 0, -5, -5, -5], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w_int8", "w_scale"], ["w"]),
            helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "colour_rule",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, TILE, TILE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 6])],
        [
            helper.make_tensor("w_int8", TensorProto.INT8, [3, 6], weights.ravel()),
            helper.make_tensor("w_scale", TensorProto.FLOAT, [], [0.1 / 127]),
            helper.make_tensor("b", TensorProto.FLOAT, [6], bias),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ModelArtifact("onnx", model.SerializeToString())


RUN_PARAMS = {
    "land_cover": {"max_unknown_fraction": 0.1},  # otherville's code 200: 64 of its ~1,200 NLCD px
    "tiling": {"tile_size": TILE},
    "scoring": {"image_size": TILE, "batch_size": 4, "max_failed_fraction": 0.1},  # 1 of 24 tiles fails
    "development_inference": {
        "regions": "testville otherville",  # as --params gives it: names separated by spaces
        "older_naip_year": 2012,
        "gallery_size": 2,
        "candidates": {
            "from_classes": ["Undeveloped", "Cultivated"],
            "min_older_share": 0.6,
            "min_probability": 0.8,
            "prediction": "predicted",
        },
    },
}
OTHERVILLE_ALONE = RUN_PARAMS | {
    "development_inference": RUN_PARAMS["development_inference"]
    | {"regions": ["otherville"], "gallery_size": 1}
}
REGION_FILES = [
    "07_model_output/regions/{}/" + name
    for name in (
        "older_classes.tif",
        "predicted_classes.tif",
        "smoothed_classes.tif",
        "predicted_classes.tif.aux.xml",
        "predicted_classes.qml",
        "change_candidates.csv",
        "change_candidates.geojson",
    )
] + [
    "08_reporting/regions/{}/" + name
    for name in (
        "development_agreement.json",
        "development_maps.png",
        "change_candidate_gallery.png",
        "development_summary.csv",
    )
]


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """The whole pipeline on two synthetic regions at once; testville's newer scene has one corrupt
    internal block (the GeoTIFF is tiled in TILE x TILE blocks, so exactly tile CORRUPTED is
    unreadable)."""
    project = make_project_copy(tmp_path_factory.mktemp("development") / "project")
    catalog = load_catalog(project, params=RUN_PARAMS)
    cwd = Path.cwd()
    os.chdir(project)
    try:
        catalog.save(
            "naip_scenes",
            {"testville_2012": _scene(OLDER), "otherville_2016": _scene(NEWER, east=OTHERVILLE_OFFSET)},
        )
        catalog.save("nlcd_rasters", {"nlcd_2011": _nlcd()})
        catalog.save("scoring_model", colour_rule_model())
    finally:
        os.chdir(cwd)
    newer = project / "data/01_raw/naip/testville_2016.tif"
    GeoTiffDataset(filepath=str(newer), save_args={"blockxsize": TILE, "blockysize": TILE}).save(
        _scene(NEWER, hole=HOLE)
    )
    corrupt_block(newer, x=CORRUPTED[1], y=CORRUPTED[0])
    run_pipeline(project, "development_inference", params=RUN_PARAMS)
    return project


def _load(project, name, partition=None):
    """A dataset of the run, or one partition of a partitioned one, loaded."""
    cwd = Path.cwd()
    os.chdir(project)
    try:
        data = load_catalog(project, params=RUN_PARAMS).load(name)
        return data if partition is None else data[partition]()
    finally:
        os.chdir(cwd)


def test_every_full_tile_of_each_region_is_in_every_output(region_run):
    tiles = _load(region_run, "development_tile_classes")
    for region in ("testville", "otherville"):
        region_tiles = tiles[tiles["region"] == region]
        assert sorted(zip(region_tiles["row"], region_tiles["col"])) == [
            (r, c) for r in range(3) for c in range(4)
        ]
        summary = _load(region_run, "development_summary", region)
        assert set(summary["region"]) == {region}
        for title in ("older", "predicted", "smoothed"):
            assert summary[f"{title}_tiles"].sum() == 12
        rasters = _load(region_run, "region_class_rasters")
        for kind in ("older", "predicted", "smoothed"):
            assert rasters[f"{region}/{kind}"]().read(indexes=1).shape == (3, 4)
        assert _load(region_run, "development_agreement", region)["tiles"] == 12
        for path in REGION_FILES:
            assert (region_run / "data" / path.format(region)).is_file(), path.format(region)


def test_the_agreement_names_the_model_that_scored_read_from_the_model_file(region_run):
    model = colour_rule_model()
    assert model.precision == "int8"  # its weights go through DequantizeLinear
    (version,) = [path.name for path in (region_run / "data/06_models/scoring_model.onnx").iterdir()]
    for region in ("testville", "otherville"):
        recorded = _load(region_run, "development_agreement", region)["model"]
        assert recorded == {
            "format": "onnx",
            "precision": "int8",
            "bytes": len(model.payload),
            "version": version,
            "sha256": hashlib.sha256(model.payload).hexdigest(),
        }


def test_each_regions_outputs_name_the_run_and_the_model_that_made_them(region_run):
    (version,) = [path.name for path in (region_run / "data/06_models/scoring_model.onnx").iterdir()]
    for region in ("testville", "otherville"):
        report = _load(region_run, "development_agreement", region)
        run_id = report["run_id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}Z", run_id), run_id  # a session id
        geojson = _load(region_run, "change_candidates", region)
        assert geojson["provenance"]["run_id"] == run_id
        assert geojson["provenance"]["model"]["version"] == version
        for kind in ("older", "predicted", "smoothed"):
            path = region_run / f"data/07_model_output/regions/{region}/{kind}_classes.tif"
            with rasterio.open(path) as raster:
                tags = raster.tags()
            assert (tags["run_id"], tags["model_version"]) == (run_id, version), path
            assert tags["model_sha256"] == report["model"]["sha256"]
    with rasterio.open(region_run / "data/07_model_output/county/smoothed_classes.tif") as raster:
        assert raster.tags()["run_id"] == run_id


def test_every_output_names_its_region(region_run):
    with rasterio.open(region_run / "data/07_model_output/regions/otherville/smoothed_classes.tif") as raster:
        assert raster.tags()["region"] == "otherville" and raster.tags()["classes"] == "smoothed"
        assert raster.tags()["newer_naip_year"] == "2016"
        assert raster.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    table = _load(region_run, "change_candidates_table", "otherville")
    geojson = _load(region_run, "change_candidates", "otherville")
    assert set(table["region"]) == {"otherville"}
    assert {feature["properties"]["region"] for feature in geojson["features"]} == {"otherville"}
    assert _load(region_run, "development_agreement", "otherville")["region"] == "otherville"
    # the CSV's columns are the GeoJSON's properties plus the footprint in the scene's CRS
    assert list(table.columns) == [
        *geojson["features"][0]["properties"],
        "minx",
        "miny",
        "maxx",
        "maxy",
        "crs",
    ]


def test_class_rasters_are_aligned_with_the_tiles(region_run):
    tiles = _load(region_run, "development_tile_classes")
    tiles = tiles[tiles["region"] == "testville"]
    raster = _load(region_run, "region_class_rasters", "testville/predicted")
    assert raster.crs.to_string() == "EPSG:26919" == tiles["crs"].iloc[0]
    for tile in tiles.itertuples():
        assert raster.transform @ (tile.col, tile.row) == pytest.approx((tile.minx, tile.maxy))
        assert raster.transform @ (tile.col + 1, tile.row + 1) == pytest.approx((tile.maxx, tile.miny))
    assert raster.colormap(1)[1][:3] == (0xE4, 0x1A, 0x1C)  # Developed, the walkthrough's red
    folder = region_run / "data/07_model_output/regions/testville"
    pam = (folder / "predicted_classes.tif.aux.xml").read_text()
    assert "<Category>nodata</Category><Category>Developed</Category><Category>Cultivated</Category>" in pam
    assert 'label="Undeveloped"' in (folder / "predicted_classes.qml").read_text()


def test_predictions_and_older_labels_land_on_the_right_tiles(region_run):
    codes = {"Developed": 1, "Cultivated": 2, "Undeveloped": 3}
    predicted = _load(region_run, "region_class_rasters", "testville/predicted").read(indexes=1)
    older = _load(region_run, "region_class_rasters", "testville/older").read(indexes=1)
    expected_new = [
        [codes["Developed"] if key == "D" else codes["Undeveloped"] for key in line] for line in NEWER
    ]
    expected_new[2][0] = codes[
        "Developed"
    ]  # the tan cultivated tile is redder than green: the rule says Developed
    otherville = _load(region_run, "region_class_rasters", "otherville/predicted").read(indexes=1)
    np.testing.assert_array_equal(otherville, expected_new)  # the same scene, nothing corrupt or masked
    expected_new[CORRUPTED[0]][CORRUPTED[1]] = NODATA
    expected_new[HOLE[0]][HOLE[1]] = NODATA  # masked: part of it is outside the imagery
    np.testing.assert_array_equal(predicted, expected_new)
    assert older[1, 3] == NODATA  # water, masked by default
    assert (
        older[2, 0] == codes["Cultivated"]
        and older[0, 3] == codes["Developed"]
        and older[0, 0] == codes["Undeveloped"]
    )
    assert older[0, 1] == codes["Undeveloped"]  # the mixed tile: 5/8 undeveloped beats 3/8 developed


def test_the_mosaic_holds_each_region_where_it_lies(region_run):
    regions = {
        region: rasterio.open(region_run / f"data/07_model_output/regions/{region}/smoothed_classes.tif")
        for region in ("testville", "otherville")
    }
    seen = dict.fromkeys(regions, 0)
    with rasterio.open(region_run / "data/07_model_output/county/smoothed_classes.tif") as mosaic:
        assert mosaic.crs.to_epsg() == 5070 and mosaic.tags()["regions"] == "testville otherville"
        assert mosaic.colormap(1)[1][:3] == (0xE4, 0x1A, 0x1C)
        codes = mosaic.read(1)
        rows, cols = np.nonzero(codes != NODATA)
        xs, ys = rasterio.transform.xy(mosaic.transform, rows, cols)
        xs, ys = warp("EPSG:5070", "EPSG:26919", xs, ys)
        for x, y, code in zip(xs, ys, codes[rows, cols]):
            inside = [
                (name, source)
                for name, source in regions.items()
                if source.bounds.left <= x < source.bounds.right
                and source.bounds.bottom < y <= source.bounds.top
            ]
            assert len(inside) == 1, (x, y)  # every mapped cell lies in exactly one region
            name, source = inside[0]
            assert source.read(1)[source.index(x, y)] == code  # nearest neighbour: the region's own class
            seen[name] += 1
    assert min(seen.values()) >= 6, seen  # both regions are in the mosaic
    assert (region_run / "data/07_model_output/county/predicted_classes.tif.aux.xml").is_file()


def test_unreadable_window_is_a_failure_row_naming_scene_and_window(region_run):
    tiles = _load(region_run, "development_tile_classes")
    tiles = tiles[tiles["region"] == "testville"].set_index(["row", "col"])
    failed = tiles.loc[CORRUPTED]
    assert "testville_2016.tif" in failed["error"] and failed["col_off"] == CORRUPTED[1] * TILE
    # GDAL's cause under rasterio's "Read failed. See previous exception", and no offsets of ours
    assert "RasterioIOError" in failed["error"] and "IReadBlock failed" in failed["error"]
    assert "col_off" not in failed["error"]
    assert pd.isna(failed["predicted_class"]) and pd.isna(failed["smoothed_class"])
    assert tiles["error"].notna().sum() == 1  # its block's other tiles were read one by one and scored
    predictions = pd.read_parquet(region_run / "data/07_model_output/development_predictions.parquet")
    assert len(predictions) == 24 and predictions["error"].notna().sum() == 1
    assert "tile_id" in predictions and not {"image_id", "path", "true_label"} & set(
        predictions
    )  # a window's
    agreement = _load(region_run, "development_agreement", "testville")
    assert agreement["failed_tiles"] == 1 and agreement["masked_tiles"] == 1  # the hole's tile
    assert agreement["predicted_tiles"] == 10 and len(agreement["failure_reasons"]) == 1
    summary = _load(region_run, "development_summary", "testville").set_index("class")
    assert summary.loc["nodata", "predicted_tiles"] == 2  # the unreadable tile and the masked one


def test_change_candidates_are_the_true_changes_in_wgs84(region_run):
    for region, expected in (("testville", EXPECTED_CANDIDATES), ("otherville", OTHERVILLE_CANDIDATES)):
        geojson = _load(region_run, "change_candidates", region)
        assert sorted(feature["id"] for feature in geojson["features"]) == expected
        for feature in geojson["features"]:
            properties = feature["properties"]
            assert properties["tile_id"] == feature["id"]
            assert properties["older_class"] == (
                "Cultivated" if feature["id"] == "testville_2016_r0002_c0000" else "Undeveloped"
            )
            assert properties["predicted_class"] == "Developed" and properties["change_probability"] >= 0.8
            assert properties["older_share"] >= 0.6
            lon, lat = np.array(feature["geometry"]["coordinates"][0]).mean(axis=0)
            assert -72 < lon < -70 and 42 < lat < 43.5
        table = _load(region_run, "change_candidates_table", region)
        assert table["rank"].tolist() == list(range(1, len(expected) + 1))
        assert table["change_probability"].is_monotonic_decreasing


def test_gallery_neighbourhood_is_centred_on_the_tile_and_black_beyond_the_edge(region_run, monkeypatch):
    scenes = _load(region_run, "naip_scenes")
    monkeypatch.chdir(region_run)  # the scenes' paths are relative to the project
    key, scene = newer_scene(
        scenes, "testville", {"newer_naip_year": 2016}, {"tile_size": TILE, "resolution": 1.0}
    )
    grid = tiling_grid(key, scene, {"resolution": 1.0})
    crop = neighbourhood_rgb(scene, grid, 0, 3, TILE)  # top-right tile: no row above, no column right
    assert crop.shape == (3 * TILE, 3 * TILE, 3)
    assert not crop[:TILE].any() and not crop[:, 2 * TILE :].any()
    centre = crop[TILE : 2 * TILE, TILE : 2 * TILE].reshape(-1, 3).mean(axis=0)
    assert centre == pytest.approx(COLOURS["D"], abs=2)  # tile (0, 3) is developed red
    below_left = crop[2 * TILE :, :TILE].reshape(-1, 3).mean(axis=0)
    assert below_left == pytest.approx(COLOURS[NEWER[1][2]], abs=2)  # tile (1, 2)
    # beside the damaged block: that tile black, its readable neighbours shown, no error
    row, col = CORRUPTED
    damaged = neighbourhood_rgb(scene, grid, row, col - 1, TILE)
    assert not damaged[TILE : 2 * TILE, 2 * TILE :].any()  # the damaged tile, right of the centre
    centre = damaged[TILE : 2 * TILE, TILE : 2 * TILE].reshape(-1, 3).mean(axis=0)
    assert centre == pytest.approx(COLOURS[NEWER[row][col - 1]], abs=2)


# --- the analyst's outputs: reference sample, GeoParquet table, STAC catalog (before the tests that map
# the regions again) ---------------------------------------------------------------------------------


def test_each_region_gets_a_reference_sample_and_without_labels_says_what_to_do(region_run):
    """No analyst labels and no sample-scene truth for these regions: the sample is drawn from every
    mapped tile's stratum, and the estimate says what to do instead of failing the run."""
    tiles = _load(region_run, "development_tile_classes")
    for region in ("testville", "otherville"):
        sample = _load(region_run, "reference_sample", region)
        mapped = tiles[(tiles["region"] == region) & tiles["predicted_class"].notna()]
        assert set(sample["tile_id"]) <= set(mapped["tile_id"]) and len(sample) > 0
        assert sample["reference_class"].isna().all()  # the CSV's empty column, for the analyst
        assert sample.groupby("stratum")["stratum_tiles"].first().sum() == len(mapped)
        report = _load(region_run, "area_estimates", region)
        assert report["status"] == "no reference labels" and "New development" in report["classes"]
        gallery = region_run / f"data/08_reporting/regions/{region}/reference_sample_gallery.png"
        with Image.open(gallery) as image:  # every sampled tile, three pairs a row
            assert image.height > 300 * -(-len(sample) // 3) * 0.5, (image.size, len(sample))


def test_the_tile_table_opens_in_geopandas_with_one_footprint_per_tile_in_the_scenes_crs(region_run):
    import geopandas as gpd

    tiles = _load(region_run, "development_tile_classes")
    for region in ("testville", "otherville"):
        path = region_run / f"data/07_model_output/regions/{region}/tiles.parquet"
        table = gpd.read_parquet(path)  # as a user opens it, not through the project's catalog
        expected = tiles[tiles["region"] == region].set_index("tile_id")
        assert table.crs.to_epsg() == int(expected["crs"].iloc[0].split(":")[1])
        assert sorted(table["tile_id"]) == sorted(expected.index) and table["tile_id"].is_unique
        bounds = table.set_index("tile_id").geometry.bounds.loc[expected.index]
        np.testing.assert_allclose(bounds.to_numpy(), expected[["minx", "miny", "maxx", "maxy"]].to_numpy())
        assert (table.geometry.area == (expected["maxx"] - expected["minx"]).iloc[0] ** 2).all()  # squares
        pd.testing.assert_series_equal(
            table.set_index("tile_id")["predicted_class"].loc[expected.index], expected["predicted_class"]
        )


REGION_ASSETS = {
    "older_classes",
    "predicted_classes",
    "smoothed_classes",
    "probabilities",
    "change_candidates",
}
COUNTY_ASSETS = {"older_classes", "predicted_classes", "smoothed_classes", "probabilities"}


def _stac(project: Path) -> Path:
    return project / "data/07_model_output/stac"


def _items(project: Path) -> dict[str, pystac.Item]:
    catalog = pystac.Catalog.from_file(str(_stac(project) / "catalog.json"))
    return {f"{item.collection_id}/{item.id}": item for item in catalog.get_items(recursive=True)}


def test_the_catalog_walks_to_each_region_and_the_county_with_the_run_and_model(region_run):
    catalog = pystac.Catalog.from_file(str(_stac(region_run) / "catalog.json"))
    assert sorted(child.id for child in catalog.get_children()) == [COUNTY, REGIONS]
    items = _items(region_run)
    assert sorted(items) == [f"{COUNTY}/county", f"{REGIONS}/otherville", f"{REGIONS}/testville"]
    (version,) = [path.name for path in (region_run / "data/06_models/scoring_model.onnx").iterdir()]
    run_id = _load(region_run, "development_agreement", "testville")["run_id"]
    for item in items.values():
        props = item.properties
        assert item.datetime is None
        assert (props["start_datetime"][:4], props["end_datetime"][:4]) == ("2011", "2016")
        assert props["landuse:run_id"] == run_id
        assert (props["landuse:model_version"], props["landuse:model_precision"]) == (version, "int8")
        assert set(props["processing:software"]) == {"landuse-kedro"}
        assert props["proj:code"] == ("EPSG:5070" if item.id == "county" else "EPSG:26919")
        assert all(uri.startswith("https://stac-extensions.github.io/") for uri in item.stac_extensions)
        written = json.loads(Path(item.get_self_href()).read_text())["links"]
        assert sorted(link["rel"] for link in written) == ["collection", "parent", "root"]
        assert all(link["href"].startswith("../") for link in written), written
    assert set(items[f"{REGIONS}/testville"].assets) == REGION_ASSETS
    assert set(items[f"{COUNTY}/county"].assets) == COUNTY_ASSETS


def test_every_asset_href_is_relative_and_names_a_file_with_that_size_and_checksum(region_run):
    checked = 0
    for item in _items(region_run).values():
        item_file = Path(item.get_self_href())
        raw = json.loads(item_file.read_text())  # as written: pystac makes hrefs absolute once read
        for key, asset in item.assets.items():
            href = raw["assets"][key]["href"]
            assert not href.startswith("/") and "://" not in href, href
            path = (item_file.parent / href).resolve()
            assert path.is_file(), href
            assert path.is_relative_to((region_run / "data/07_model_output").resolve())
            content = path.read_bytes()
            assert asset.extra_fields["file:size"] == len(content), href
            assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(content).hexdigest(), href
            checked += 1
    assert checked == 2 * len(REGION_ASSETS) + len(COUNTY_ASSETS)


def test_the_footprints_are_the_rasters_bounds_in_wgs84(region_run):
    items = _items(region_run)
    for region in ("testville", "otherville"):
        with rasterio.open(
            region_run / f"data/07_model_output/regions/{region}/predicted_classes.tif"
        ) as raster:
            expected = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
        assert items[f"{REGIONS}/{region}"].bbox == pytest.approx(expected, abs=1e-7)
    county = items[f"{COUNTY}/county"].bbox
    testville, otherville = items[f"{REGIONS}/testville"].bbox, items[f"{REGIONS}/otherville"].bbox
    assert county == pytest.approx([*testville[:2], *otherville[2:]], abs=1e-9)  # otherville lies east


def test_the_legend_and_bands_are_those_of_the_rasters_and_the_qgis_style(region_run):
    asset = _items(region_run)[f"{REGIONS}/testville"].assets["predicted_classes"].extra_fields
    qml = (region_run / "data/07_model_output/regions/testville/predicted_classes.qml").read_text()
    legend = [
        {"value": int(value), "title": label, "color_hint": colour.upper()}
        for value, colour, label in re.findall(r'value="(\d+)" color="#(\w{6})"[^>]*label="([^"]+)"', qml)
    ]
    assert len(legend) == 3
    classes = asset["classification:classes"]
    assert [{key: c[key] for key in ("value", "title", "color_hint")} for c in classes[1:]] == legend
    assert classes[0] == {**classes[0], "value": 0, "nodata": True}
    assert asset["raster:bands"] == [{"nodata": 0, "data_type": "uint8"}]
    probabilities = _items(region_run)[f"{REGIONS}/testville"].assets["probabilities"].extra_fields
    with rasterio.open(region_run / "data/07_model_output/regions/testville/probabilities.tif") as raster:
        names, scales = list(raster.descriptions), list(raster.scales)
    assert [band["name"] for band in probabilities["raster:bands"]] == names
    assert [band["scale"] for band in probabilities["raster:bands"]] == pytest.approx(scales)
    assert {band["nodata"] for band in probabilities["raster:bands"]} == {255}


def test_a_search_by_a_regions_box_finds_that_region_alone(region_run, tmp_path):
    stac = _stac(region_run)
    items = [json.loads(path.read_text()) for path in sorted(stac.glob("*/items/*.json"))]
    boxes = {item["id"]: item["bbox"] for item in items}
    with stac_api(items, tmp_path / "api") as url:
        client = Client.open(url)
        for region in ("testville", "otherville"):
            found = client.search(bbox=boxes[region], collections=[REGIONS]).item_collection()
            assert [item.id for item in found] == [region]
        everywhere = client.search(bbox=boxes["testville"]).item_collection()
        assert sorted(item.id for item in everywhere) == ["county", "testville"]  # why the county has its own


def test_a_file_without_a_checksum_is_refused_not_described(region_run):
    from landuse_kedro.pipelines.development_inference.pipeline import create_pipeline

    (node,) = [node for node in create_pipeline().nodes if node.name == "stac_catalog"]
    datasets = [
        name for name in node.inputs if not name.startswith("params:") and name != "development_provenance"
    ]
    assert "output_files" in datasets  # the node's own inputs, as the pipeline wires them
    inputs = {name: _load(region_run, name) for name in datasets}
    params = _load(region_run, "parameters")
    provenance = {"run_id": "r1", "project_version": "0", "model": {"version": "v", "precision": "int8"}}
    args = dict(
        **inputs,
        development_provenance=provenance,
        land_cover=params["land_cover"],
        development_inference=params["development_inference"],
    )
    documents = stac_catalog(**args)  # pure: the same inputs give the catalog
    assert documents["regions/items/testville"]["properties"]["landuse:run_id"] == "r1"
    del args["output_files"]["regions/testville/probabilities.tif"]
    with pytest.raises(ValueError, match=r"regions/testville/probabilities\.tif"):
        stac_catalog(**args)


def test_file_digests_skip_hidden_staged_and_excluded_entries_on_any_filesystem():
    fs = fsspec.filesystem("memory")
    files = {
        "out/regions/a/map.tif": b"abc",
        "out/regions/a/map.tif.staging-1@host-0123abcd": b"half",
        "out/regions/a/_SUCCESS": b"",
        "out/.run.lock": b"",
        "out/stac/catalog.json": b"{}",
        "out/big.parquet/part-0.parquet": b"x" * 10,
        "out/big.parquet.md": b"kept: only the folder named is excluded",
    }
    for path, content in files.items():
        fs.pipe(f"/{path}", content)
    digests = FileDigestsDataset(path="memory://out", exclude=["stac", "big.parquet"]).load()
    assert digests == {
        "big.parquet.md": {
            "size": len(files["out/big.parquet.md"]),
            "sha256": hashlib.sha256(files["out/big.parquet.md"]).hexdigest(),
        },
        "regions/a/map.tif": {"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
    }
    assert FileDigestsDataset(path="memory://nothing-here").load() == {}


def test_mapping_another_region_later_keeps_the_first(region_run, tmp_path):
    """Run again for otherville alone: testville's files are untouched, otherville's rewritten,
    and the mosaic is of this run's region."""
    data = region_run / "data"
    testville = {path: (data / path.format("testville")).read_bytes() for path in REGION_FILES}
    gallery = data / REGION_FILES[-2].format("otherville")
    before = gallery.stat().st_mtime_ns
    run_pipeline(region_run, "development_inference", params=OTHERVILLE_ALONE)
    assert gallery.stat().st_mtime_ns > before  # this run did write otherville's outputs
    for path, content in testville.items():
        assert (data / path.format("testville")).read_bytes() == content, path
    with rasterio.open(data / "07_model_output/county/smoothed_classes.tif") as mosaic:
        assert mosaic.tags()["regions"] == "otherville"
    tiles = pd.read_parquet(data / "07_model_output/development_tile_classes.parquet")
    assert set(tiles["region"]) == {"otherville"}  # the working table holds the last run's regions


def test_a_mistyped_region_fails_before_spark_starts(region_run):
    from landuse_kedro.spark import spark_is_running

    assert not spark_is_running(), "a session from another test is still up: this check would be void"
    params = RUN_PARAMS | {
        "development_inference": RUN_PARAMS["development_inference"] | {"regions": ["testville", "testvile"]}
    }
    with pytest.raises(ValueError, match=r"Unknown region\(s\) 'testvile'.*regions otherville, testville\."):
        run_pipeline(region_run, "development_inference", params=params)
    assert not spark_is_running()  # plan_regions refused it before the first Spark node


def test_nlcd_codes_outside_the_legend_give_no_older_class_and_are_named(region_run):
    tiles = _load(region_run, "development_tile_classes").set_index(["region", "row", "col"])
    on_code = tiles.loc[("otherville", *UNKNOWN_CODE_TILE)]
    assert on_code["predicted_class"] == "Developed" and pd.isna(on_code["older_class"])  # not Undeveloped
    assert (tiles.loc["otherville"].drop(UNKNOWN_CODE_TILE)["older_class"] == "Undeveloped").all()
    assert _load(region_run, "development_agreement", "otherville")["unknown_nlcd_codes"] == {"200": 64}
    assert _load(region_run, "development_agreement", "testville")["unknown_nlcd_codes"] == {}


def test_nlcd_codes_outside_the_legend_above_the_budget_stop_before_spark(region_run):
    from landuse_kedro.spark import spark_is_running

    assert not spark_is_running(), "a session from another test is still up: this check would be void"
    params = RUN_PARAMS | {"land_cover": {"max_unknown_fraction": 0.01}}
    with pytest.raises(
        ValueError, match=r"'otherville_2016'.*nlcd_2011.*outside the legend.*code 200: 64 px"
    ):
        run_pipeline(region_run, "development_inference", params=params)
    assert not spark_is_running()


def _plan_one(tmp_path: Path, scene: Path, nlcd: GeoRaster):
    GeoTiffDataset(filepath=str(tmp_path / "nlcd_2011.tif")).save(nlcd)
    options = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_development_inference.yml").read_text())
    options = options["development_inference"] | {"regions": ["testville"], "older_naip_year": None}
    land_cover = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text())["land_cover"]
    return plan_regions(
        {"testville_2016": GeoTiffDataset(filepath=str(scene)).load},
        {"nlcd_2011": GeoTiffDataset(filepath=str(tmp_path / "nlcd_2011.tif")).load},
        land_cover,
        {"tile_size": TILE, "resolution": 1.0},
        options,
    )


def test_a_uint16_nlcd_is_refused_when_planned(tmp_path):
    scene = tmp_path / "testville_2016.tif"
    GeoTiffDataset(filepath=str(scene)).save(_scene(NEWER))
    assert _plan_one(tmp_path, scene, _nlcd())["testville"].newer.labels_key == "nlcd_2011"
    nlcd = _nlcd()
    wide = GeoRaster(nlcd.array.astype(np.uint16), nlcd.crs, nlcd.transform)
    with pytest.raises(ValueError, match=r"NLCD raster 'nlcd_2011' must be uint8 NLCD codes .*got uint16"):
        _plan_one(tmp_path, scene, wide)


def test_a_scene_without_a_crs_is_refused_when_planned(tmp_path):
    scene = tmp_path / "testville_2016.tif"
    pixels = _scene(NEWER).array
    with rasterio.open(
        scene, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=4, dtype="uint8"
    ) as dataset:
        dataset.write(pixels)
    with pytest.raises(ValueError, match=r"Scene 'testville_2016' has no CRS: .*gdal_edit\.py -a_srs"):
        _plan_one(tmp_path, scene, _nlcd())


def test_a_parameter_without_its_pipeline_prefix_is_refused(region_run):
    with pytest.raises(
        ValueError,
        match=r"Unknown runtime parameter\(s\) 'regions' \(did you mean "
        r"[^)]*\bdevelopment_inference.regions\b[^)]*\?\)",
    ):
        load_catalog(region_run, params={"regions": "essex"})
    assert load_catalog(region_run, params={"development_inference": {"regions": "essex"}}) is not None


def _run_ids(project: Path, region: str) -> set[str]:
    """The run ids that ``region``'s outputs name: one when its files are one run's."""
    ids = {_load(project, "development_agreement", region)["run_id"]}
    ids.add(_load(project, "change_candidates", region)["provenance"]["run_id"])
    for kind in ("older", "predicted", "smoothed"):
        with rasterio.open(project / f"data/07_model_output/regions/{region}/{kind}_classes.tif") as raster:
            ids.add(raster.tags()["run_id"])
    return ids


def test_two_runs_mapping_two_regions_at_once_take_turns(region_run, tmp_path):
    """Two real `kedro run` processes on one project, one per region, started a second apart (issue 28):
    the second waits for the first's run lock instead of writing the shared tables beside it, and
    afterwards each region's files are one run's, the shared tables and the mosaic the second's."""
    from tests.test_run_lock import kedro_run, text, wait_for_lock

    project = tmp_path / "project"
    shutil.copytree(region_run, project, ignore=shutil.ignore_patterns("regions", "county"))
    assert not (project / "data/07_model_output/regions").exists()  # each run must write its region anew
    # RUN_PARAMS as configuration (the CLI's --params splits lists at commas); regions per run.
    test_conf = project / "conf/test"
    inference = yaml.safe_load((test_conf / "parameters_development_inference.yml").read_text())
    inference["development_inference"] |= {
        key: value for key, value in RUN_PARAMS["development_inference"].items() if key != "regions"
    }
    (test_conf / "parameters_development_inference.yml").write_text(yaml.safe_dump(inference))
    shared = {key: RUN_PARAMS[key] for key in ("land_cover", "tiling", "scoring")}
    (test_conf / "parameters_regions_run.yml").write_text(yaml.safe_dump(shared))

    def run(region: str, log: Path, *params: str):
        return kedro_run(
            project, log, f"development_inference.regions={region}", *params, pipeline="development_inference"
        )

    first = run("testville", tmp_path / "testville.log")
    try:
        assert wait_for_lock(project, first)["pid"] == first.pid
        time.sleep(1)
        second = run("otherville", tmp_path / "otherville.log", "run_lock.wait_s=600")
        assert first.wait(timeout=600) == 0, text(tmp_path / "testville.log")[-3000:]
        assert second.wait(timeout=600) == 0, text(tmp_path / "otherville.log")[-3000:]
    finally:
        for process in (first, locals().get("second")):
            if process is not None and process.poll() is None:
                stop_process(process)
    assert "Waiting up to 600 s for the run writing to" in text(tmp_path / "otherville.log")
    (testville_run,), (otherville_run,) = _run_ids(project, "testville"), _run_ids(project, "otherville")
    assert testville_run != otherville_run
    data = project / "data"
    for region in ("testville", "otherville"):  # every file of each region, written by its run
        assert all((data / path.format(region)).is_file() for path in REGION_FILES), region
    tiles = pd.read_parquet(data / "07_model_output/development_tile_classes.parquet")
    assert set(tiles["region"]) == {"otherville"} and len(tiles) == len(set(tiles["tile_id"]))
    assert len(tiles) == len(NEWER) * len(NEWER[0])  # complete: every full tile of otherville
    with rasterio.open(data / "07_model_output/county/smoothed_classes.tif") as mosaic:
        assert (mosaic.tags()["regions"], mosaic.tags()["run_id"]) == ("otherville", otherville_run)
    leftovers = [p.name for p in data.rglob("*") if ".staging-" in p.name or ".previous-" in p.name]
    assert leftovers == [] and not (data / ".run.lock").exists()
