"""Stratified area and accuracy estimators of Olofsson et al. (2014, "Good practices for estimating
area and assessing accuracy of land change", Remote Sensing of Environment 148:42-57). Why: counting
a map's pixels per class gives areas biased by the map's omission and commission errors, and says
nothing of their uncertainty; a reference sample drawn at random within each map class (strata =
map classes) gives unbiased class areas and accuracies, each with a standard error and a confidence
interval. Pure functions, no I/O: sample size, its allocation to strata, and the estimates from the
sample's error matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

_WEIGHT_TOLERANCE = 1e-6


def sample_size(weights: Sequence[float], proportions: Sequence[float], target_standard_error: float) -> int:
    """Total sample size for a target standard error of overall accuracy (Olofsson eq. 13, after
    Cochran): n = (sum_i W_i S_i / S)^2 with S_i = sqrt(p_i (1 - p_i)), p_i the expected user's
    accuracy of stratum i. Rounded up, as a fraction of a sample unit cannot be drawn and rounding
    down would miss the target."""
    w = np.asarray(weights, dtype=np.float64)
    p = np.asarray(proportions, dtype=np.float64)
    if w.ndim != 1 or w.shape != p.shape or w.size == 0:
        raise ValueError(
            "weights and proportions need one value per stratum, "
            f"got {w.size} weights and {p.size} proportions"
        )
    if np.any(w < 0) or abs(w.sum() - 1.0) > _WEIGHT_TOLERANCE:
        raise ValueError(f"weights must be non-negative and sum to 1 (within 1e-6), they sum to {w.sum()!r}")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"proportions must lie in [0, 1], got {p.tolist()}")
    if not target_standard_error > 0:
        raise ValueError(f"target_standard_error must be positive, got {target_standard_error!r}")
    root_n = float(np.sum(w * np.sqrt(p * (1 - p)))) / target_standard_error
    return math.ceil(root_n * root_n)


def allocate(stratum_sizes: Mapping[str, int], total: int, minimum: int) -> dict[str, int]:
    """Per-stratum sample sizes. Why a minimum: a rare map class (often the change class of interest)
    would get too few samples under proportional allocation to estimate its user's accuracy.

    Every stratum first gets ``minimum`` samples (all its units if it has fewer); the rest of
    ``total`` is shared in proportion to stratum size, a stratum never getting more than its size,
    with largest-remainder rounding so the sizes sum to ``total`` exactly (or to the sum of stratum
    sizes, if ``total`` exceeds it). If ``total`` is below the minimums' sum, the minimums win and
    the result sums to more than ``total``. Ties in rounding go to the larger stratum, then to the
    stratum named first in ``stratum_sizes``, so the result is deterministic.
    """
    if total < 0 or minimum < 0:
        raise ValueError(f"total and minimum must be non-negative, got total={total}, minimum={minimum}")
    for name, size in stratum_sizes.items():
        if size < 0 or int(size) != size:
            raise ValueError(f"stratum {name!r} has size {size!r}; sizes must be non-negative integers")
    names = list(stratum_sizes)
    sizes = {name: int(stratum_sizes[name]) for name in names}
    result = {name: min(minimum, sizes[name]) for name in names}
    rest = min(total, sum(sizes.values())) - sum(result.values())
    # Water-filling: share the rest in proportion to size; a stratum whose share exceeds its
    # remaining units takes them all and drops out, and the others share again.
    open_names = [name for name in names if sizes[name] > result[name]]
    shares: dict[str, float] = {}
    while rest > 0 and open_names:
        open_size = sum(sizes[name] for name in open_names)
        shares = {name: rest * sizes[name] / open_size for name in open_names}
        full = [name for name in open_names if shares[name] >= sizes[name] - result[name]]
        if not full:
            break
        for name in full:
            rest -= sizes[name] - result[name]
            result[name] = sizes[name]
        open_names = [name for name in open_names if name not in full]
        shares = {}
    if rest > 0 and shares:
        floors = {name: math.floor(shares[name]) for name in open_names}
        for name in open_names:
            result[name] += floors[name]
        left = rest - sum(floors.values())
        order = sorted(
            open_names, key=lambda name: (-(shares[name] - floors[name]), -sizes[name], names.index(name))
        )
        for name in order:
            if left <= 0:
                break
            if result[name] < sizes[name]:
                result[name] += 1
                left -= 1
    return result


def _interval(estimate: float | None, variance: float | None, z: float) -> dict[str, float | None]:
    if estimate is None or variance is None:
        return {"estimate": estimate, "standard_error": None, "ci95": None}
    standard_error = math.sqrt(max(variance, 0.0))
    return {"estimate": float(estimate), "standard_error": standard_error, "ci95": z * standard_error}


def _checked_counts(
    error_matrix: pd.DataFrame, mapped_units: Mapping[str, float]
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Counts and strata sizes in the matrix's class order, refusing inputs the estimators would
    silently misread (transposed or reordered labels, missing strata)."""
    rows, cols = list(error_matrix.index), list(error_matrix.columns)
    if rows != cols:
        raise ValueError(
            "error_matrix needs the same class labels in the same order on rows (map) and columns "
            f"(reference), got rows {rows} and columns {cols}"
        )
    if len(set(rows)) != len(rows):
        raise ValueError(f"error_matrix has repeated class labels: {rows}")
    if set(mapped_units) != set(rows):
        raise ValueError(
            f"mapped_units must name exactly the error matrix's classes {rows}, got {list(mapped_units)}"
        )
    counts = error_matrix.to_numpy(dtype=np.float64)
    if np.any(np.isnan(counts)) or np.any(counts < 0):
        raise ValueError("error_matrix counts must be non-negative numbers")
    units = np.array([float(mapped_units[label]) for label in rows])
    if np.any(np.isnan(units)) or np.any(units < 0):
        raise ValueError(f"mapped_units must be non-negative, got {dict(mapped_units)}")
    if units.sum() <= 0:
        raise ValueError("mapped_units sum to zero: there is no mapped area to estimate")
    return rows, counts, units


def estimate(
    error_matrix: pd.DataFrame,
    mapped_units: Mapping[str, float],
    unit_area: float = 1.0,
    z: float = 1.96,
    finite_population: bool = False,
) -> dict:
    """Stratified estimates of accuracy and class area (Olofsson et al. 2014, eqs. 2-12) from the
    reference sample's ``error_matrix`` of counts (rows map class = stratum, columns reference
    class) and the strata sizes ``mapped_units`` (map units per map class). Areas are in units of
    ``unit_area``; ``ci95`` is ``z`` standard errors.

    ``finite_population`` multiplies each stratum's variance term by (1 - n_i/N_i): Olofsson's
    formulas (the default) treat strata as infinite, which overstates the variance when a stratum
    is a sizeable fraction sampled; a stratum sampled completely then contributes no variance.

    Undefined quantities (user's accuracy of a class never mapped, producer's accuracy of a class
    absent from the reference) are None, not NaN, so the result stays valid JSON.
    """
    rows, counts, units = _checked_counts(error_matrix, mapped_units)
    labels = [str(label) for label in rows]
    n_row = counts.sum(axis=1)
    for label, n_i, big_n in zip(labels, n_row, units, strict=True):
        if big_n == 0 and n_i > 0:
            raise ValueError(f"stratum {label!r} has {n_i:g} samples but no mapped units")
        if finite_population and n_i > big_n:
            raise ValueError(f"stratum {label!r} has {n_i:g} samples but only {big_n:g} mapped units")
    correction = np.ones_like(units)
    if finite_population:
        correction = np.divide(units - n_row, units, out=np.zeros_like(units), where=units > 0)
    for label, n_i, big_n, fpc in zip(labels, n_row, units, correction, strict=True):
        # A stratum sampled completely (under the correction) has no variance to estimate.
        if big_n > 0 and n_i < 2 and fpc > 0:
            raise ValueError(
                f"stratum {label!r} has {n_i:g} sample(s); its variance needs at least 2 (n_i - 1 > 0)"
            )

    total_units = float(units.sum())
    weights = units / total_units
    sampled = n_row > 0
    # Row shares n_ij / n_i. (user's-accuracy-like), zero for unsampled (unmapped) strata.
    shares = np.divide(counts, n_row[:, None], out=np.zeros_like(counts), where=sampled[:, None])
    # Per-stratum factor of every variance term: (1 - n_i/N_i) / (n_i - 1), zero where the stratum
    # has no weight or no variance.
    active = (units > 0) & (correction > 0)
    factor = np.divide(correction, n_row - 1, out=np.zeros_like(units), where=active)
    proportions = weights[:, None] * shares
    reference_share = proportions.sum(axis=0)
    users = np.diag(shares)

    overall = float(np.trace(proportions))
    overall_variance = float(np.sum(weights**2 * users * (1 - users) * factor))

    users_accuracy = {}
    for i, label in enumerate(labels):
        if units[i] == 0:
            users_accuracy[label] = _interval(None, None, z)
        else:
            users_accuracy[label] = _interval(users[i], users[i] * (1 - users[i]) * factor[i], z)

    # Estimated units of each reference class, N_.j = sum_i (N_i / n_i) n_ij.
    reference_units = (units[:, None] * shares).sum(axis=0)
    producers_accuracy = {}
    for j, label in enumerate(labels):
        if reference_share[j] == 0:
            producers_accuracy[label] = _interval(None, None, z)
            continue
        producers = float(proportions[j, j] / reference_share[j])
        own = units[j] ** 2 * (1 - producers) ** 2 * users[j] * (1 - users[j]) * factor[j]
        others = sum(
            units[i] ** 2 * shares[i, j] * (1 - shares[i, j]) * factor[i]
            for i in range(len(labels))
            if i != j
        )
        variance = (own + producers**2 * others) / reference_units[j] ** 2
        producers_accuracy[label] = _interval(producers, float(variance), z)

    share_variance = (weights[:, None] ** 2 * shares * (1 - shares) * factor[:, None]).sum(axis=0)
    area = {}
    for j, label in enumerate(labels):
        share_se = math.sqrt(max(float(share_variance[j]), 0.0))
        area_se = share_se * total_units * unit_area
        area[label] = {
            "mapped": float(units[j] * unit_area),
            "estimate": float(reference_share[j] * total_units * unit_area),
            "standard_error": area_se,
            "ci95": z * area_se,
            "proportion": float(reference_share[j]),
            "proportion_standard_error": share_se,
        }

    # Whole counts stay ints in the JSON, as they were counted.
    whole = np.all(counts == np.round(counts))
    sample_counts = counts.astype(np.int64).tolist() if whole else counts.tolist()
    return {
        "classes": labels,
        "weights": weights.tolist(),
        "sample_counts": sample_counts,
        "area_proportions": proportions.tolist(),
        "overall_accuracy": _interval(overall, overall_variance, z),
        "users_accuracy": users_accuracy,
        "producers_accuracy": producers_accuracy,
        "area": area,
        "unit_area": float(unit_area),
        "z": float(z),
        "finite_population": bool(finite_population),
    }
