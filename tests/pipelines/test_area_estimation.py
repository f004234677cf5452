"""Stratified area and accuracy estimators, checked against the worked example of Olofsson et al.
(2014, Remote Sensing of Environment 148:42-57, section 5) and on small cases with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from landuse_kedro.pipelines.development_inference.area_estimation import allocate, estimate, sample_size

CLASSES = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]
MAPPED_PIXELS = dict(zip(CLASSES, [200_000, 150_000, 3_200_000, 6_450_000], strict=True))
COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
PIXEL_HA = 0.09  # 30 m Landsat pixel


def _example(**kwargs) -> dict:
    matrix = pd.DataFrame(COUNTS, index=CLASSES, columns=CLASSES)
    return estimate(matrix, MAPPED_PIXELS, unit_area=PIXEL_HA, **kwargs)


def test_olofsson_example_weights_and_proportions():
    result = _example()
    assert result["classes"] == CLASSES
    assert result["weights"] == pytest.approx([0.02, 0.015, 0.32, 0.645])
    assert result["sample_counts"] == COUNTS
    # p_11 = W_1 n_11 / n_1. = 0.02 * 66 / 75
    assert result["area_proportions"][0][0] == pytest.approx(0.0176)
    assert result["area_proportions"][3][0] == pytest.approx(0.645 * 2 / 325)


def test_olofsson_example_deforestation_area():
    area = _example()["area"]["Deforestation"]
    # Published: p_.1 = 0.023509, SE 0.0034907; area 21,158 ha +- 6,158 ha.
    assert round(area["proportion"], 6) == 0.023509
    assert round(area["proportion_standard_error"], 7) == 0.0034907
    assert round(area["estimate"]) == 21_158
    assert round(area["ci95"]) == 6_158
    assert area["ci95"] == pytest.approx(1.96 * area["standard_error"])
    assert area["mapped"] == pytest.approx(200_000 * PIXEL_HA)


def test_olofsson_example_accuracies():
    result = _example()
    users = result["users_accuracy"]["Deforestation"]
    producers = result["producers_accuracy"]["Deforestation"]
    overall = result["overall_accuracy"]
    # Published: UA 0.88 +- 0.07, OA 0.95 +- 0.02.
    assert round(users["estimate"], 2) == 0.88
    assert round(users["ci95"], 2) == 0.07
    assert round(overall["estimate"], 2) == 0.95
    assert round(overall["ci95"], 2) == 0.02
    # PA 0.75: eq. 7 gives a 95 % half-width of 0.2133 (SE 0.1088), i.e. 0.21 to two decimals. The
    # brief quoted 0.20; an independent implementation tested against the paper
    # (boothmanrylan/accuracyAssessmentTools) also expects 0.21, so the formula's value is tested.
    assert round(producers["estimate"], 2) == 0.75
    assert round(producers["ci95"], 2) == 0.21
    assert producers["standard_error"] == pytest.approx(0.10883, abs=1e-5)


def test_estimate_is_plain_json():
    result = _example()
    assert json.loads(json.dumps(result)) == result


def test_olofsson_sample_size_example():
    # (0.02*sqrt(.21) + 0.015*sqrt(.24) + 0.32*sqrt(.09) + 0.645*sqrt(.0475))^2 / 0.01^2 = 640.54 -> 641
    n = sample_size([0.02, 0.015, 0.32, 0.645], [0.70, 0.60, 0.90, 0.95], 0.01)
    assert n == 641


def test_sample_size_rounds_up_and_scales():
    # One stratum, p = 0.5: n = (0.5 / 0.05)^2 = 100 exactly; a slightly smaller target needs more.
    assert sample_size([1.0], [0.5], 0.05) == 100
    assert sample_size([1.0], [0.5], 0.0499) == 101


@pytest.mark.parametrize(
    ("weights", "proportions", "target", "message"),
    [
        ([0.5, 0.4], [0.9, 0.9], 0.01, "sum to 1"),
        ([0.5, 0.5], [0.9, 1.2], 0.01, r"\[0, 1\]"),
        ([0.5, 0.5], [0.9, 0.9], 0.0, "positive"),
        ([0.5, 0.5], [0.9], 0.01, "one value per stratum"),
    ],
)
def test_sample_size_refuses_bad_inputs(weights, proportions, target, message):
    with pytest.raises(ValueError, match=message):
        sample_size(weights, proportions, target)


def test_allocate_minimum_then_proportional():
    sizes = {"developed": 500, "water": 30, "forest": 6_000, "cultivated": 3_500}
    result = allocate(sizes, total=300, minimum=50)
    assert sum(result.values()) == 300
    assert all(result[name] >= min(50, size) for name, size in sizes.items())
    assert all(result[name] <= size for name, size in sizes.items())
    assert result["water"] == 30  # fewer units than the minimum: all of them
    # Rest 300 - 180 = 120 shared by size among strata with units left (500 + 6000 + 3500): 6, 72, 42.
    assert result == {"developed": 56, "water": 30, "forest": 122, "cultivated": 92}
    assert allocate(dict(reversed(list(sizes.items()))), total=300, minimum=50) == result


def test_allocate_rounds_by_largest_remainder():
    # Shares 0.7, 1.4, 4.9 -> floors 0, 1, 4; the 2 left go to the largest remainders (.9, .7).
    result = allocate({"a": 100, "b": 200, "c": 700}, total=7, minimum=0)
    assert result == {"a": 1, "b": 1, "c": 5}


def test_allocate_caps_at_stratum_size_and_redistributes():
    result = allocate({"small": 10, "big": 90}, total=60, minimum=0)
    assert result == {"small": 6, "big": 54}
    capped = allocate({"small": 10, "big": 1_000}, total=500, minimum=20)
    assert capped == {"small": 10, "big": 490}
    assert allocate({"a": 3, "b": 4}, total=100, minimum=1) == {"a": 3, "b": 4}


def test_allocate_minimums_win_over_small_total():
    result = allocate({"a": 100, "b": 200, "c": 5}, total=10, minimum=20)
    assert result == {"a": 20, "b": 20, "c": 5}


def test_allocate_ties_are_deterministic():
    # Three equal strata share 2 extra samples: ties go to the first named, whatever the call.
    first = allocate({"x": 100, "y": 100, "z": 100}, total=2, minimum=0)
    assert first == {"x": 1, "y": 1, "z": 0}
    assert allocate({"x": 100, "y": 100, "z": 100}, total=2, minimum=0) == first


def test_estimate_refuses_stratum_with_one_sample():
    counts = [[1, 0], [2, 8]]
    matrix = pd.DataFrame(counts, index=["a", "b"], columns=["a", "b"])
    with pytest.raises(ValueError, match="'a'"):
        estimate(matrix, {"a": 100, "b": 900})


@pytest.mark.parametrize(
    "columns", [["b", "a"], ["a", "c"]], ids=["same labels, other order", "other labels"]
)
def test_estimate_refuses_mismatched_labels(columns):
    matrix = pd.DataFrame([[5, 1], [2, 8]], index=["a", "b"], columns=columns)
    with pytest.raises(ValueError, match="same class labels"):
        estimate(matrix, {"a": 100, "b": 900})


def test_estimate_refuses_missing_mapped_units():
    matrix = pd.DataFrame([[5, 1], [2, 8]], index=["a", "b"], columns=["a", "b"])
    with pytest.raises(ValueError, match="mapped_units"):
        estimate(matrix, {"a": 100})


def test_perfect_map_has_exact_accuracy_and_mapped_areas():
    labels = ["developed", "forest", "water"]
    matrix = pd.DataFrame(np.diag([20, 30, 10]), index=labels, columns=labels)
    units = {"developed": 1_000, "forest": 5_000, "water": 400}
    result = estimate(matrix, units, unit_area=2.5)
    assert result["overall_accuracy"]["estimate"] == pytest.approx(1.0)
    assert result["overall_accuracy"]["standard_error"] == 0.0
    for label in labels:
        assert result["area"][label]["estimate"] == pytest.approx(units[label] * 2.5)
        assert result["area"][label]["estimate"] == pytest.approx(result["area"][label]["mapped"])
        assert result["area"][label]["standard_error"] == 0.0
        assert result["users_accuracy"][label]["estimate"] == pytest.approx(1.0)
        assert result["producers_accuracy"][label]["estimate"] == pytest.approx(1.0)


def test_finite_population_census_has_no_error():
    labels = ["developed", "undeveloped"]
    matrix = pd.DataFrame([[8, 2], [3, 27]], index=labels, columns=labels)
    units = {"developed": 10, "undeveloped": 30}  # every unit sampled
    infinite = estimate(matrix, units)
    assert infinite["area"]["developed"]["standard_error"] > 0
    census = estimate(matrix, units, finite_population=True)
    assert census["overall_accuracy"]["standard_error"] == 0.0
    for label in labels:
        assert census["area"][label]["standard_error"] == 0.0
        assert census["users_accuracy"][label]["standard_error"] == 0.0
        assert census["producers_accuracy"][label]["standard_error"] == 0.0
    # The estimates themselves do not change, only their variance.
    assert census["area"]["developed"]["estimate"] == pytest.approx(infinite["area"]["developed"]["estimate"])
    assert census["area"]["developed"]["estimate"] == pytest.approx(8 + 3)


def test_finite_population_shrinks_variance_by_sampling_fraction():
    # A single stratum sampled at half its size: variance times (1 - 1/2).
    matrix = pd.DataFrame([[6, 4], [0, 0]], index=["a", "b"], columns=["a", "b"])
    plain = estimate(matrix, {"a": 20, "b": 0})
    corrected = estimate(matrix, {"a": 20, "b": 0}, finite_population=True)
    ratio = corrected["area"]["a"]["standard_error"] / plain["area"]["a"]["standard_error"]
    assert ratio == pytest.approx(math.sqrt(0.5))


def test_undefined_accuracies_are_none():
    # "b" is never mapped (no units, no samples); "c" never occurs in the reference.
    labels = ["a", "b", "c"]
    matrix = pd.DataFrame([[6, 2, 0], [0, 0, 0], [1, 1, 0]], index=labels, columns=labels)
    result = estimate(matrix, {"a": 100, "b": 0, "c": 50})
    assert result["users_accuracy"]["b"] == {"estimate": None, "standard_error": None, "ci95": None}
    assert result["producers_accuracy"]["c"] == {"estimate": None, "standard_error": None, "ci95": None}
    assert result["producers_accuracy"]["b"]["estimate"] == 0.0  # in the reference, never mapped
    assert result["area"]["c"]["estimate"] == 0.0
    assert json.loads(json.dumps(result)) == result
