"""development_inference: the map rules on small grids, the georeferencing of its outputs, bad
inputs, and one end-to-end run on a tiny synthetic region."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from landuse_kedro.pipelines.development_inference.analysis import (
    NODATA,
    agreement,
    change_candidates,
    class_summary,
    plurality,
    smooth_classes,
    to_grid,
)
from landuse_kedro.pipelines.development_inference.geo import (
    candidates_geojson,
    colour_table,
    tile_grid_transform,
)

CLASSES = ["Developed", "Cultivated", "Undeveloped"]
D, C, U = 1, 2, 3


# --- plurality ---------------------------------------------------------------------------------

def test_plurality_picks_the_most_frequent_class_and_its_share():
    pixels = np.array([[U, U, D], [D, D, 0], [C, D, 0]])
    assert plurality(pixels) == (D, pytest.approx(4 / 7))


def test_plurality_ties_go_to_the_lowest_code_whatever_the_pixel_order():
    assert plurality(np.array([U, U, C, C]))[0] == C
    assert plurality(np.array([C, U, C, U]))[0] == C


def test_plurality_of_nodata_only_is_nodata():
    assert plurality(np.zeros((3, 3), dtype=np.uint8)) == (NODATA, 0.0)


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
    return pd.DataFrame({
        "tile_id": ["t0", "t1", "t2", "t3", "t4", "t5"],
        "row": [0, 0, 0, 1, 1, 1],
        "col": [0, 1, 2, 0, 1, 2],
        "older_class": ["Undeveloped", "Undeveloped", "Cultivated", "Developed", "Undeveloped", None],
        "predicted_class": ["Developed", "Developed", "Developed", "Developed", "Undeveloped", "Developed"],
        "prob_Developed": [0.95, 0.7, 0.99, 0.9, 0.1, 0.99],
    })


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
    table = class_summary(tiles, CLASSES, {"older": "older_class", "predicted": "predicted_class",
                                           "smoothed": "smoothed_class"})
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
    left, top = transform * (3, 2)
    right, bottom = transform * (4, 3)
    assert (left, top) == pytest.approx(scene * (20 + 3 * 224, 10 + 2 * 224))
    assert (right, bottom) == pytest.approx(scene * (20 + 4 * 224, 10 + 3 * 224))
    assert transform.a == pytest.approx(0.6 * 224) and transform.e == pytest.approx(-0.6 * 224)


def test_colour_table_has_transparent_nodata_and_needs_every_colour():
    table = colour_table(CLASSES, {"Developed": "red", "Cultivated": "white", "Undeveloped": "green"})
    assert table[NODATA][3] == 0
    assert table[1] == (255, 0, 0, 255) and table[2] == (255, 255, 255, 255)
    with pytest.raises(ValueError, match="Undeveloped"):
        colour_table(CLASSES, {"Developed": "red", "Cultivated": "white"})


def test_geojson_footprints_are_in_wgs84_and_carry_the_attributes():
    from rasterio.warp import transform as warp

    candidates = pd.DataFrame({
        "tile_id": ["a"], "rank": [1], "change_probability": [0.93], "older_class": ["Undeveloped"],
        "predicted_class": ["Developed"], "row": [4], "col": [7],
        "minx": [330_000.0], "miny": [4_690_000.0], "maxx": [330_134.4], "maxy": [4_690_134.4],
        "crs": ["EPSG:26919"],
    })
    collection = candidates_geojson(candidates)
    feature = collection["features"][0]
    assert feature["properties"] == {"id": "a", "rank": 1, "probability": 0.93, "older_class": "Undeveloped",
                                     "newer_class": "Developed", "row": 4, "col": 7}
    ring = np.array(feature["geometry"]["coordinates"][0])
    lons, lats = warp("EPSG:26919", "EPSG:4326", [330_000.0, 330_134.4], [4_690_000.0, 4_690_134.4])
    assert ring[:, 0].min() == pytest.approx(min(lons)) and ring[:, 0].max() == pytest.approx(max(lons))
    assert ring[:, 1].min() == pytest.approx(min(lats)) and ring[:, 1].max() == pytest.approx(max(lats))
    assert -72 < ring[0, 0] < -70 and 42 < ring[0, 1] < 43  # Massachusetts
