"""How much land was developed, with a confidence interval: a stratified reference sample of each region's
tiles for an analyst to label, and the area estimates of Olofsson et al. (2014) from those labels.

Counting the map's tiles (``development_summary``) gives an area biased by the map's errors. Here the
map's classes are strata, with the change candidates as a stratum of their own (``NEW``); a seeded random
sample of each stratum is labelled by a person (or, on the sample scene, by the generator's truth), and
the labelled sample gives each class's area, and the newly developed area, with a 95 % interval.
The unit is the tile, so the estimate is the area of tiles that became developed (at least half of
their pixels, as a person labelling a tile would judge it).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rasterio.windows import Window

from landuse_kedro.pipelines.development_inference.area_estimation import allocate, estimate, sample_size
from landuse_kedro.pipelines.development_inference.figures import candidate_gallery
from landuse_kedro.pipelines.development_inference.geo import candidates_geojson
from landuse_kedro.pipelines.development_inference.inference import RegionPlan
from landuse_kedro.pipelines.development_inference.maps import gallery_items, gallery_years
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    per_region,
    prediction_column,
    this_run,
)

logger = logging.getLogger(__name__)

NEW = "New development"
"""The change stratum (the change candidates) and the reference class of a tile that became developed."""
SAMPLE_COLUMNS = [
    "region",
    "sample_id",
    "stratum",
    "tile_id",
    "row",
    "col",
    "mapped_class",
    "older_class",
    "change_probability",
    "stratum_tiles",
    "stratum_sample",
    "reference_class",
]
"""A sample row: what the analyst sees and fills (``reference_class``), plus what the estimate needs
(``stratum_tiles``, the stratum's size), so a labelled CSV is complete on its own."""
CHANGED_SHARE = 0.5  # a tile "became developed" when at least half its pixels did (the truth labels)


def _strata(tiles: pd.DataFrame, candidates: pd.DataFrame, column: str) -> pd.Series:
    """Each mapped tile's stratum: ``NEW`` for a change candidate, else its map class."""
    mapped = tiles[tiles[column].notna()]
    return pd.Series(
        np.where(mapped["tile_id"].isin(set(candidates["tile_id"])), NEW, mapped[column]), index=mapped.index
    )


def draw_reference_sample(
    development_tile_classes: pd.DataFrame,
    change_candidates_table: Mapping[str, Callable[[], pd.DataFrame]],
    development_provenance: dict[str, Any],
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Draw each region's stratified random sample of tiles for reference labelling.

    The total size is Olofsson et al.'s n = (sum W_h S_h / S)^2 for the target standard error S of
    the newly developed share, with S_h = sqrt(p_h (1 - p_h)) and p_h the share of truly new tiles
    expected in stratum h (``expected_new_share``: in the candidates, their expected user's accuracy;
    elsewhere, the expected omission). Each stratum gets at least ``min_per_stratum`` tiles (all of a
    smaller one), the rest in proportion to its size. Seeded by ``seed`` and the region's name.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        change_candidates_table: ``change_candidates_table`` as saved (the change stratum).
        development_provenance: ``development_provenance`` (written into the GeoJSON).
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``reference_sample``, ``candidates``).

    Returns:
        ``reference_sample``: region -> the sample (``SAMPLE_COLUMNS`` and the footprint in the scene's
        CRS), ``reference_class`` empty for the analyst.
        ``reference_sample_geojson``: region -> the same tiles as GeoJSON footprints in EPSG:4326.
    """
    candidates = this_run(change_candidates_table, development_inference)
    tables, geojson = {}, {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        tables[region] = sample_region(region, tiles, candidates[region], land_cover, development_inference)
        geojson[region] = candidates_geojson(tables[region], SAMPLE_COLUMNS, development_provenance)
    return tables, geojson


def sample_region(
    region: str,
    tiles: pd.DataFrame,
    candidates: pd.DataFrame,
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> pd.DataFrame:
    """One region's sample (:func:`draw_reference_sample`): ``SAMPLE_COLUMNS`` and the footprint."""
    settings = development_inference["reference_sample"]
    column = prediction_column(development_inference)
    to_class = development_inference["candidates"].get("to_class", "Developed")
    strata = _strata(tiles, candidates, column)
    order = [NEW, *map_classes(land_cover, development_inference)]
    sizes = {name: int((strata == name).sum()) for name in order if (strata == name).any()}
    expected = settings["expected_new_share"]
    shares = [expected["candidates"] if name == NEW else expected["elsewhere"] for name in sizes]
    total = sum(sizes.values())
    n = sample_size([size / total for size in sizes.values()], shares, settings["target_standard_error"])
    per_stratum = allocate(sizes, n, int(settings["min_per_stratum"]))
    rng = np.random.default_rng([int(settings["seed"]), zlib.crc32(region.encode())])
    picked = []
    for name, count in per_stratum.items():
        members = strata.index[strata == name].to_numpy()
        chosen = tiles.loc[np.sort(rng.choice(members, size=count, replace=False))]
        picked.append(chosen.assign(stratum=name, stratum_tiles=sizes[name], stratum_sample=count))
    sample = pd.concat(picked)
    sample = sample.assign(
        sample_id=np.arange(1, len(sample) + 1),
        mapped_class=sample[column],
        change_probability=sample[f"prob_{to_class}"],
        reference_class="",
    )
    logger.info(
        "%s: reference sample of %d tiles (formula: %d) for a standard error of %s: %s",
        region,
        len(sample),
        n,
        settings["target_standard_error"],
        ", ".join(f"{name} {count} of {sizes[name]}" for name, count in per_stratum.items()),
    )
    return sample[[*SAMPLE_COLUMNS, "minx", "miny", "maxx", "maxy", "crs"]]


def changed_share(tiles: pd.DataFrame, truth, max_pixels: int = 64_000_000) -> np.ndarray:
    """Share of each tile's pixels that a truth mask marks as newly developed (1), read by bounds, so
    it holds whatever grid the tiles were cut on. One read of the tiles' bounding window when it is
    small (a sample scene's region), one read per tile otherwise (a county's scattered sample)."""
    if tiles.empty:
        return np.empty(0)
    a, b, c, d, e, f = (~truth.transform)[:6]  # north-up: (minx, maxy) is a tile's top-left corner
    minx, miny, maxx, maxy = (tiles[k].to_numpy(float) for k in ("minx", "miny", "maxx", "maxy"))
    col0, row0 = a * minx + b * maxy + c, d * minx + e * maxy + f
    col1, row1 = a * maxx + b * miny + c, d * maxx + e * miny + f
    rows0, cols0 = np.floor(row0 + 0.5).astype(int), np.floor(col0 + 0.5).astype(int)
    rows1, cols1 = np.floor(row1 + 0.5).astype(int), np.floor(col1 + 0.5).astype(int)
    top, left, bottom, right = rows0.min(), cols0.min(), rows1.max(), cols1.max()
    if (bottom - top) * (right - left) > max_pixels:
        windows = [
            Window(c, r, c1 - c, r1 - r) for r, c, r1, c1 in zip(rows0, cols0, rows1, cols1, strict=True)
        ]
        return np.array(
            [_changed(truth.read(indexes=1, window=w, boundless=True, fill_value=0)) for w in windows]
        )
    whole = truth.read(
        indexes=1, window=Window(left, top, right - left, bottom - top), boundless=True, fill_value=0
    )
    return np.array(
        [
            _changed(whole[r - top : r1 - top, c - left : c1 - left])
            for r, c, r1, c1 in zip(rows0, cols0, rows1, cols1, strict=True)
        ]
    )


def _changed(pixels: np.ndarray) -> float:
    return float((pixels == 1).mean()) if pixels.size else 0.0


def truth_labels(sample: pd.DataFrame, truth) -> pd.Series:
    """The generator's answer for each sampled tile: ``NEW`` where at least half of it became developed,
    else its older label (nothing else changes in the sample scene), or its map class without one."""
    became = changed_share(sample, truth) >= CHANGED_SHARE
    unchanged = sample["older_class"].where(sample["older_class"].notna(), sample["mapped_class"])
    return pd.Series(np.where(became, NEW, unchanged), index=sample.index)


def _analyst_sample(labelled: pd.DataFrame, classes: list[str], region: str) -> pd.DataFrame:
    """The analyst's labelled copy of ``reference_sample.csv``, checked. It is the sample: it carries
    each row's stratum and the stratum's size, so it stays valid for the map it was drawn from even
    after the map changes (a retrained model, another seed). Refuses a row without a label, a stratum
    with fewer rows than were drawn (a deleted row is a missing label), and a label that names no class,
    so a typo never becomes an error of the map."""
    missing_columns = sorted({*SAMPLE_COLUMNS, "minx", "miny", "maxx", "maxy"} - set(labelled.columns))
    if missing_columns:
        raise ValueError(
            f"Reference labels of {region}: no column(s) {missing_columns}; label a copy of "
            "reference_sample.csv, keeping its columns."
        )
    labelled = labelled.drop_duplicates("tile_id")
    reference = labelled["reference_class"].fillna("").astype(str).str.strip()
    drawn = labelled.groupby("stratum")["stratum_sample"].first()
    deleted = int((drawn - labelled.groupby("stratum").size()).clip(lower=0).sum())
    unlabelled = labelled.loc[reference == "", "tile_id"].tolist()
    if unlabelled or deleted:
        raise ValueError(
            f"Reference labels of {region}: {len(unlabelled) + deleted} of {int(drawn.sum())} sampled tiles "
            f"have no reference_class, e.g. {unlabelled[:3] or 'deleted rows'}. Label every row of "
            "reference_sample.csv."
        )
    unknown = sorted(set(reference) - set(classes))
    if unknown:
        raise ValueError(f"Reference labels of {region}: {unknown} are not classes; use one of {classes}.")
    return labelled.assign(reference_class=reference)


def estimate_developed_area(
    reference_sample: Mapping[str, Callable[[], pd.DataFrame]],
    reference_labels: Mapping[str, Callable[[], pd.DataFrame]],
    sample_change_truth: Mapping[str, Callable[[], Any]],
    development_tile_classes: pd.DataFrame,
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> tuple[dict[str, dict], dict[str, Figure]]:
    """Estimate each region's class areas and newly developed area from its labelled reference sample.

    Labels come from ``reference_labels`` (``01_raw/reference/<region>.csv``: the sample's CSV with
    ``reference_class`` filled, which is then the sample, strata and their sizes included), or, for a
    region of the sample scene without such a file, from the generator's truth on this run's sample.
    A region with neither is reported with what to do, and the run goes on.

    Args:
        reference_sample: ``reference_sample`` as saved by :func:`draw_reference_sample`.
        reference_labels: ``reference_labels``: the analysts' files (none is fine).
        sample_change_truth: ``sample_change_truth``: the sample scene's truth (none is fine).
        development_tile_classes: ``development_tile_classes`` (the true area, when the truth is known).
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``regions``, ``candidates``).

    Returns:
        ``area_estimates``: region -> the error matrix in area proportions, overall, user's and producer's
        accuracy and each class's area (mapped and estimated, hectares, 95 % intervals); the newly
        developed area first; the true area when the generator's truth labelled the sample.
        ``area_estimate_figures``: region -> mapped against estimated area per class, with intervals.
    """
    samples = this_run(reference_sample, development_inference)
    classes = [NEW, *map_classes(land_cover, development_inference)]
    column = prediction_column(development_inference)
    reports, figures = {}, {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        truth = None
        if region in reference_labels:
            sample, source = _analyst_sample(reference_labels[region](), classes, region), "analyst"
        elif region in sample_change_truth:
            truth = sample_change_truth[region]()
            sample = samples[region].assign(reference_class=truth_labels(samples[region], truth))
            source = "sample_scene truth"
        else:
            logger.warning(
                "No reference labels for %s: fill the reference_class column of "
                "07_model_output/regions/%s/reference_sample.csv (one of %s), save it as "
                "01_raw/reference/%s.csv and run development_inference again. Until then only the "
                "mapped areas exist (development_summary).",
                region,
                region,
                classes,
                region,
            )
            reports[region] = {"region": region, "status": "no reference labels", "classes": classes}
            continue
        reports[region] = estimate_region(region, sample, tiles, classes, source, truth, column)
        figures[region] = _area_figure(reports[region])
        _log_headline(reports[region])
    return reports, figures


def estimate_region(
    region: str,
    sample: pd.DataFrame,
    tiles: pd.DataFrame,
    classes: list[str],
    source: str,
    truth=None,
    column: str = "predicted_class",
) -> dict[str, Any]:
    """One region's report (:func:`estimate_developed_area`) from its labelled sample; with ``truth``
    (the generator's), the true area of the region's mapped tiles and whether the interval covers it."""
    seen = set(sample["stratum"]) | set(sample["reference_class"])
    present = [name for name in classes if name == NEW or name in seen]  # NEW always: the headline
    counts = pd.crosstab(
        pd.Categorical(sample["stratum"], categories=present),
        pd.Categorical(sample["reference_class"], categories=present),
        dropna=False,
    )
    strata = sample.drop_duplicates("stratum").set_index("stratum")["stratum_tiles"]
    tile_area_ha = float(
        ((sample["maxx"] - sample["minx"]) * (sample["maxy"] - sample["miny"])).median() / 1e4
    )
    result = estimate(
        counts,
        {name: int(strata.get(name, 0)) for name in present},
        unit_area=tile_area_ha,
        finite_population=True,  # tiles are sampled without replacement from a few hundred
    )
    new = result["area"].get(NEW, {})
    report = {
        "region": region,
        "status": "estimated",
        "labels_from": source,
        "unit": "tile",
        "tile_area_ha": tile_area_ha,
        "sample_tiles": len(sample),
        "new_development_ha": {
            "mapped": new.get("mapped"),
            "estimate": new.get("estimate"),
            "ci95": new.get("ci95"),
            "interval": [new["estimate"] - new["ci95"], new["estimate"] + new["ci95"]] if new else None,
        },
        **result,
    }
    if truth is not None:
        report["truth"] = _true_area(tiles, column, truth, report)
    return report


def _true_area(tiles: pd.DataFrame, column: str, truth, report: dict[str, Any]) -> dict[str, Any]:
    """What the generator knows about the region's mapped tiles: the area of tiles that became developed
    (the quantity estimated) and of the pixels that did."""
    mapped = tiles[tiles[column].notna()]
    shares = changed_share(mapped, truth)
    tile_ha = report["tile_area_ha"]
    true_tiles = float((shares >= CHANGED_SHARE).sum() * tile_ha)
    low, high = report["new_development_ha"]["interval"]
    return {
        "new_development_tiles_ha": true_tiles,
        "new_development_pixels_ha": float(shares.sum() * tile_ha),
        "interval_covers_truth": bool(low <= true_tiles <= high),
    }


def _log_headline(report: dict[str, Any]) -> None:
    new = report["new_development_ha"]
    truth = report.get("truth")
    logger.info(
        "%s: newly developed %.1f ha +/- %.1f ha (95 %%; labels: %s, %d sampled tiles); "
        "the map counts %.1f ha%s",
        report["region"],
        new["estimate"],
        new["ci95"],
        report["labels_from"],
        report["sample_tiles"],
        new["mapped"],
        f"; true: {truth['new_development_tiles_ha']:.1f} ha of tiles" if truth else "",
    )


def _area_figure(report: dict[str, Any]) -> Figure:
    """Mapped against estimated area of each class, the estimate with its 95 % interval."""
    names = list(report["area"])
    mapped = [report["area"][name]["mapped"] for name in names]
    estimated = [report["area"][name]["estimate"] for name in names]
    errors = [report["area"][name]["ci95"] for name in names]
    figure = Figure(figsize=(1.6 * len(names) + 2, 3.6))
    axis = figure.subplots()
    x = np.arange(len(names))
    axis.bar(x - 0.2, mapped, 0.4, label="mapped (tile count)", color="#bbbbbb")
    axis.bar(
        x + 0.2, estimated, 0.4, yerr=errors, capsize=4, label="estimated, 95 % interval", color="#4477aa"
    )
    axis.set_xticks(x, names, rotation=15)
    axis.set_ylabel("hectares")
    axis.set_title(f"{report['region']}: area by class ({report['sample_tiles']} reference tiles)")
    axis.legend()
    return figure


def plot_reference_gallery(
    reference_sample: Mapping[str, Callable[[], pd.DataFrame]],
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    development_inference: dict[str, Any],
) -> dict[str, Figure]:
    """Every sampled tile with its surroundings in both years, numbered as in ``reference_sample.csv``,
    so an analyst can label the sample from one figure (or check it beside the GeoJSON in QGIS).

    Args:
        reference_sample: ``reference_sample`` as saved by :func:`draw_reference_sample`.
        development_tile_classes: ``development_tile_classes`` (the older labels' colours, without an
            older scene).
        region_plans: ``region_plans`` from :func:`plan_regions` (the scenes to read).
        development_inference: ``params:development_inference`` (``regions``, ``gallery_pixels``,
            ``older_naip_year``, ``older_nlcd_year``, ``newer_naip_year``).

    Returns:
        ``reference_sample_gallery``: region -> the figure.
    """
    samples = this_run(reference_sample, development_inference)
    figures = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        sample, plan = samples[region], region_plans[region]
        items = gallery_items(
            sample,
            tiles,
            plan,
            development_inference,
            lambda tile: f"sample {tile.sample_id}: stratum {tile.stratum}, mapped {tile.mapped_class}",
        )
        title = (
            f"Reference sample, {region}: {len(items)} tiles to label (reference_sample.csv; coordinates in "
            f"{plan.newer.grid.crs.to_string()})"
        )
        figures[region] = candidate_gallery(items, *gallery_years(plan, development_inference), title, 3)
    return figures
