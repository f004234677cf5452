"""LandCover, the one home of the class vocabulary, checked on the project's real parameters."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from landuse_kedro.classes import DROPPED, NO_LABEL, UNKNOWN, LandCover, unknown_codes
from tests.helpers import LAND_COVER

PARAMS = LAND_COVER


@pytest.fixture(scope="module")
def land() -> LandCover:
    return LandCover.from_params(PARAMS)


def test_the_six_classes_keep_the_order_the_parameters_give(land):
    assert land.classes == tuple(PARAMS["classes"])
    assert len(land.classes) == 6
    reversed_order = LandCover.from_params({**PARAMS, "classes": PARAMS["classes"][::-1]})
    assert reversed_order.classes == land.classes[::-1]


def test_every_nlcd_code_of_the_parameters_maps_to_its_class_index(land):
    lut = land.nlcd_lookup()
    listed = {int(code): name for name, codes in PARAMS["nlcd_to_class"].items() for code in codes}
    assert {code: land.classes[lut[code]] for code in listed} == listed
    # nothing else is a class: water (11) and ice (12) are dropped, no data (0, 250) unlabelled,
    # and every other code is unknown (never a class, never silently dropped)
    assert sorted(np.flatnonzero(lut < len(land.classes)).tolist()) == sorted(listed)
    assert lut[11] == lut[12] == DROPPED and lut[0] == lut[250] == NO_LABEL
    legend = {*listed, 11, 12, 0, 250}
    assert [code for code in range(256) if lut[code] == UNKNOWN] == sorted(set(range(256)) - legend)
    # the indices follow the class order: reversing the classes reverses the indices
    reversed_lut = LandCover.from_params({**PARAMS, "classes": PARAMS["classes"][::-1]}).nlcd_lookup()
    assert all(reversed_lut[code] == len(land.classes) - 1 - lut[code] for code in listed)


def test_three_class_view_is_developed_cultivated_and_the_rest(land):
    assert land.three_class_names == ("Developed", "Cultivated", "Undeveloped")
    named = PARAMS["three_class"]
    for name in land.classes:  # each of the 6 classes, as the parameters group it
        assert land.to_three_class(name) == named.get(name, PARAMS["three_class_other"]), name
    assert [land.to_three_class(name) for name in ("Forest", "Shrub", "Barren", "Herbaceous")] == [
        "Undeveloped"
    ] * 4
    assert land.to_three_class(None) is None
    with pytest.raises(ValueError):
        land.to_three_class("Water")  # not a class of the model


def test_the_index_views_agree_with_the_names(land):
    indices = land.three_class_indices(np.arange(len(land.classes)))
    assert [land.three_class_names[i] for i in indices] == [land.to_three_class(c) for c in land.classes]
    lut = land.three_class_lookup()
    np.testing.assert_array_equal(lut[: len(land.classes)], indices)
    assert lut[DROPPED] == DROPPED and lut[NO_LABEL] == NO_LABEL
    # an NLCD raster straight to 3-class pixels: 24 high-intensity developed, 82 crops, 90 woody wetland
    codes = np.array([24, 82, 90, 11], dtype=np.uint8)
    assert lut[land.nlcd_lookup()[codes]].tolist() == [0, 1, 2, DROPPED]


def test_group_order_follows_the_parameters_not_the_class_order():
    land = LandCover.from_params({**PARAMS, "three_class": {"Cultivated": "Farmland", "Developed": "Built"}})
    assert land.three_class_names == ("Farmland", "Built", "Undeveloped")
    assert land.three_class_indices(np.array([0, 1, 2])).tolist() == [1, 0, 2]


def test_a_three_class_group_naming_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match=r"land_cover\.three_class .*'Developd'.*land_cover\.classes"):
        LandCover.from_params({**PARAMS, "three_class": {"Developd": "Developed", "Cultivated": "Farmland"}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["Developed", "Forest", "Developed"]}, "distinct"),
        ({"nlcd_to_class": {**PARAMS["nlcd_to_class"], "Forest": [41, 21]}}, "21 is mapped to both"),
        ({"nlcd_to_class": {**PARAMS["nlcd_to_class"], "Wetland": [90]}}, "Wetland"),
    ],
)
def test_bad_parameters_are_refused_when_read(change, message):
    with pytest.raises(ValueError, match=message):
        LandCover.from_params({**PARAMS, **change})


def test_scoring_needs_no_nlcd_table_but_labelling_says_it_is_missing():
    land = LandCover.from_params({key: value for key, value in PARAMS.items() if key != "nlcd_to_class"})
    assert land.to_three_class("Developed") == "Developed"
    with pytest.raises(ValueError, match="nlcd_to_class is missing"):
        land.nlcd_lookup()


def test_it_travels_to_spark_executors_small_and_equal(land):
    shipped = pickle.dumps(land)
    assert len(shipped) < 1000
    assert pickle.loads(shipped) == land and hash(pickle.loads(shipped)) == hash(land)


def test_unknown_codes_are_counted_per_code_and_a_declared_nodata_is_not_one(land):
    counts = np.zeros(256, np.int64)
    counts[[41, 11, 0, 250, 200, 127]] = [500, 40, 30, 20, 7, 3]
    assert unknown_codes(counts, land.nlcd_lookup()) == {127: 3, 200: 7}
    assert unknown_codes(counts, land.nlcd_lookup(), nodata=127) == {200: 7}  # the raster's own nodata


def test_legend_codes_that_are_also_classes_are_refused():
    with pytest.raises(ValueError, match=r"land_cover\.water_codes \[41\] are mapped to classes"):
        LandCover.from_params({**PARAMS, "water_codes": [11, 41]})
    with pytest.raises(ValueError, match="nodata_codes must be NLCD codes 0-255"):
        LandCover.from_params({**PARAMS, "nodata_codes": [0, 300]})
