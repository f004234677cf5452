"""Plan, score and collect: the region plans, the Spark scoring job and the per-tile class table.

A first node plans each region from the rasters' headers (the shared tiling grid of its newer scene).
Spark tasks then read every tile window of those scenes, label it from the older NLCD and score it in
the same task (no tile files); the driver gets one small row per tile, which the reporting nodes turn
into each region's outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from landuse_kedro.classes import LandCover
from landuse_kedro.pipelines.development_inference.analysis import class_codes, smooth_classes, to_grid
from landuse_kedro.pipelines.development_inference.geo import colour_table
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    older_label_lookup,
    region_names,
)
from landuse_kedro.raster import WindowedRaster, require_crs
from landuse_kedro.scene_keys import nlcd_key, parse_scene_key, scene_key
from landuse_kedro.spark import active_spark_session
from landuse_kedro.tiling import ScenePlan, plan_scene
from landuse_kedro.window_jobs import WINDOW_COLUMNS, score_windows

logger = logging.getLogger(__name__)

Loaders = Mapping[str, Callable[[], WindowedRaster]]
CLASS_COLUMNS = {"older": "older_class", "predicted": "predicted_class", "smoothed": "smoothed_class"}
"""Kind -> the column of ``development_tile_classes`` holding that kind of class; the kinds name the
class rasters, the mosaics and the summary's columns."""


# ------------------------------------------------------------------ 1. the region plans


@dataclass(frozen=True)
class RegionPlan:
    """What every later node needs about a region, computed once from the rasters' headers:
    the newer scene's tiling (grid, tile grid, older NLCD labels in the map classes), the older
    scene shown in the gallery, the map classes and their palette. No pixels."""

    region: str
    newer: ScenePlan
    older_scene: WindowedRaster | None
    palette: dict[int, tuple[int, int, int, int]]

    @property
    def classes(self) -> list[str]:
        return list(self.newer.classes)


def _region_scenes(naip_scenes: Loaders, region: str) -> dict[int, str]:
    """year -> key of the region's NAIP scenes."""
    scenes = {}
    for key in sorted(naip_scenes):
        scene_region, year = parse_scene_key(key)
        if scene_region == region:
            scenes[year] = key
    return scenes


def newer_scene(
    naip_scenes: Loaders, region: str, development_inference: dict[str, Any], tiling: dict[str, Any]
) -> tuple[str, WindowedRaster]:
    """The region's newer scene; refuses a missing scene and a region whose scenes are in
    different CRSs (its years would not line up tile for tile)."""
    year = int(development_inference["newer_naip_year"])
    scenes = _region_scenes(naip_scenes, region)  # never empty: plan_regions refused unknown regions
    if year not in scenes:
        raise ValueError(
            f"No NAIP scene '{region}_{year}' for development_inference (region {region!r}, "
            f"newer_naip_year={year}). Region {region!r} has the years {sorted(scenes)}."
        )
    sources = {key: naip_scenes[key]() for key in scenes.values()}
    for key, source in sources.items():
        require_crs(source.crs, f"Scene '{key}'")
    crss = {key: source.crs.to_string() for key, source in sources.items()}
    if len(set(crss.values())) > 1 and not tiling.get("target_crs"):
        raise ValueError(
            f"The NAIP scenes of region {region!r} are in different CRSs {crss}: their tiles would not "
            "line up across years. Reproject them to one CRS, or set tiling.target_crs."
        )
    key = scenes[year]
    return key, sources[key]


def plan_regions(
    naip_scenes: Loaders,
    nlcd_rasters: Loaders,
    land_cover: dict[str, Any],
    tiling: dict[str, Any],
    development_inference: dict[str, Any],
) -> dict[str, RegionPlan]:
    """Plan each region from headers only: every full tile of its newer scene on the shared tiling grid,
    to be labelled (in the Spark tasks) with the older NLCD edition in the map classes. Every region is
    checked before any is planned, so a typo fails at once.

    Args:
        naip_scenes: ``naip_scenes``, ``<region>_<year>`` -> lazy raster loader.
        nlcd_rasters: ``nlcd_rasters``, ``nlcd_<year>`` -> lazy raster loader.
        land_cover: ``params:land_cover`` (NLCD table and 3-class rule).
        tiling: ``params:tiling`` (the grid data_preparation cuts too).
        development_inference: ``params:development_inference`` (``regions``, ``older_nlcd_year``,
            ``newer_naip_year``, ``older_naip_year``, ``water``, ``colours``).

    Returns:
        ``region_plans``: region -> :class:`RegionPlan`, in the order of ``regions``.

    Raises:
        ValueError: ``regions`` is empty, repeats a name or names a region without scenes; there is no
            NLCD edition of ``older_nlcd_year`` or no scene of ``newer_naip_year``; a region's scenes are in
            different CRSs without ``tiling.target_crs``; ``water`` is neither keep nor mask; a scene
            has no CRS, cannot give RGB tiles or does not overlap its NLCD; the NLCD is not uint8 codes
            with a CRS; a raster passes ``tiling.limits``; or NLCD codes outside the legend cover more
            than ``land_cover.max_unknown_fraction`` of the NLCD under a scene.
    """
    regions = region_names(development_inference)
    known = sorted({parse_scene_key(key)[0] for key in naip_scenes})
    unknown = [region for region in regions if region not in known]
    if unknown:
        raise ValueError(
            f"Unknown region(s) {', '.join(map(repr, unknown))} (development_inference.regions): "
            f"the NAIP scenes are of regions {', '.join(known) or 'none'}."
        )
    older_nlcd = nlcd_key(development_inference["older_nlcd_year"])
    if older_nlcd not in nlcd_rasters:
        raise ValueError(
            f"No NLCD raster '{older_nlcd}' for the older labels (older_nlcd_year="
            f"{development_inference['older_nlcd_year']}). Available: {sorted(nlcd_rasters) or 'none'}."
        )
    scenes = {region: newer_scene(naip_scenes, region, development_inference, tiling) for region in regions}
    names = map_classes(land_cover, development_inference)
    lookup, nlcd = older_label_lookup(land_cover, development_inference), nlcd_rasters[older_nlcd]()
    budget = LandCover.from_params(land_cover).max_unknown_fraction
    return {
        region: _plan_region(
            region, key, scene, nlcd, lookup, names, naip_scenes, tiling, development_inference, budget
        )
        for region, (key, scene) in scenes.items()
    }


def _plan_region(  # noqa: PLR0913, PLR0917
    region: str,
    key: str,
    scene: WindowedRaster,
    nlcd: WindowedRaster,
    lookup: np.ndarray,
    names: list[str],
    naip_scenes: Loaders,
    tiling: dict[str, Any],
    development_inference: dict[str, Any],
    budget: float,
) -> RegionPlan:
    older_nlcd = nlcd_key(development_inference["older_nlcd_year"])
    plan = plan_scene(key, scene, nlcd, lookup, names, tiling, older_nlcd, max_unknown_fraction=budget)
    older_naip_year = development_inference.get("older_naip_year")
    older_key = scene_key(region, older_naip_year) if older_naip_year else None
    older_scene = naip_scenes[older_key]() if older_key in naip_scenes else None
    if older_naip_year and older_scene is None:
        logger.warning(
            "No NAIP scene %s: the gallery of %s shows the older labels instead.", older_key, region
        )
    tiles = plan.tiles
    logger.info(
        "Region %s: %d tiles (%d x %d) of scene %s on %s; older labels from nlcd_%s",
        region,
        len(tiles),
        tiles.n_rows,
        tiles.n_cols,
        key,
        plan.grid.crs.to_string(),
        development_inference["older_nlcd_year"],
    )
    return RegionPlan(region, plan, older_scene, colour_table(names, development_inference["colours"]))


# ------------------------------------------------------------------ 2. scoring


def score_regions(
    region_plans: dict[str, RegionPlan], scoring_model, land_cover: dict[str, Any], scoring: dict[str, Any]
):
    """Read, label and score every tile window of the regions' newer scenes in one Spark job, with no tile
    files.

    Args:
        region_plans: ``region_plans`` from :func:`plan_regions`.
        scoring_model: ``scoring_model`` from training.
        land_cover: ``params:land_cover`` (the class order of the model's outputs).
        scoring: ``params:scoring`` (``image_size`` must equal ``tiling.tile_size``).

    Returns:
        ``development_predictions``: one row per tile, the scorer's columns plus its window, bounds and
        older label; a window that cannot be read is a row with ``error`` set (lazy: saving it runs the
        job).

    Raises:
        ValueError: ``scoring.image_size`` differs from the tile size.
    """
    return score_windows([plan.newer for plan in region_plans.values()], scoring_model, land_cover, scoring)


# ------------------------------------------------------------------ 3. per-tile classes


def classify_tiles(
    development_predictions,
    region_plans: dict[str, RegionPlan],
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> pd.DataFrame:
    """Bring the scored rows to the driver as one row per tile, checked against the plans so no output
    mixes runs; a tile that failed or reaches outside the imagery gets no prediction (nodata).

    Args:
        development_predictions: ``development_predictions`` as written (a Spark DataFrame).
        region_plans: ``region_plans`` from :func:`plan_regions`.
        land_cover: ``params:land_cover`` (the probability columns).
        development_inference: ``params:development_inference`` (``water``, ``smoothing``).

    Returns:
        ``development_tile_classes``: per tile its region, grid cell and bounds, older class and share,
        prediction (null when failed or masked, the reason in ``error``), probabilities and the 3x3
        smoothed prediction; sorted by region, row and column.

    Raises:
        ValueError: A tile was scored twice, or the table's tiles are not exactly the plans' (it comes
            from another run).
    """
    active_spark_session()
    tiles = _collect_tile_rows(development_predictions, land_cover)
    _require_the_plans_tiles(tiles, region_plans)
    _add_region_and_crs(tiles, region_plans)
    _blank_failed_and_partial_tiles(tiles)
    names = next(iter(region_plans.values())).classes  # the map classes, as the plans hold them
    _smooth_each_region(tiles, names, development_inference.get("smoothing") or {})
    order = {region: position for position, region in enumerate(region_plans)}
    return tiles.sort_values(
        ["region", "row", "col"], key=lambda c: c.map(order) if c.name == "region" else c, ignore_index=True
    )


def _collect_tile_rows(development_predictions, land_cover: dict[str, Any]) -> pd.DataFrame:
    """The scored rows on the driver, only the columns the outputs use, named as the tile table names
    them (the older label is the older class)."""
    columns = [
        "tile_id",
        *WINDOW_COLUMNS,
        "predicted_label",
        "predicted_label_3",
        "probability",
        *(f"prob_{name}" for name in LandCover.from_params(land_cover).classes),
        "error",
    ]
    return (
        development_predictions.select(*columns)
        .toPandas()
        .rename(
            columns={
                "predicted_label_3": "predicted_class",
                "label_class": "older_class",
                "label_share": "older_share",
            }
        )
    )


def _require_the_plans_tiles(tiles: pd.DataFrame, region_plans: dict[str, RegionPlan]) -> None:
    """Refuse a table with a tile twice, or with tiles other than the plans' (it is another run's)."""
    duplicated = tiles["tile_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"Tiles scored more than once: {tiles.loc[duplicated, 'tile_id'].head(3).tolist()}")
    expected = {
        plan.newer.tile_id(row, col)
        for plan in region_plans.values()
        for row, col in plan.newer.tiles.cells()
    }
    if set(tiles["tile_id"]) != expected:
        raise ValueError(
            f"development_predictions holds {len(set(tiles['tile_id']) - expected)} tiles that are "
            f"not in the region plans and lacks {len(expected - set(tiles['tile_id']))}: they come "
            "from another run; rerun from score_regions."
        )


def _add_region_and_crs(tiles: pd.DataFrame, region_plans: dict[str, RegionPlan]) -> None:
    """In place: each tile's region (second column) from its scene, and the CRS of its bounds."""
    tiles.insert(
        1, "region", tiles["scene"].map({plan.newer.key: region for region, plan in region_plans.items()})
    )
    tiles["crs"] = tiles["region"].map(
        {region: plan.newer.grid.crs.to_string() for region, plan in region_plans.items()}
    )


def _blank_failed_and_partial_tiles(tiles: pd.DataFrame) -> None:
    """In place: no prediction (nodata) for a tile that failed, nor for one with pixels without image
    data, which is no evidence of land use."""
    failed = tiles["error"].notna()
    tiles.loc[failed, "predicted_class"] = None
    if failed.any():
        logger.warning(
            "%d of %d tiles have no prediction (kept as nodata), e.g. %s",
            int(failed.sum()),
            len(tiles),
            tiles.loc[failed, ["tile_id", "error"]].head(3).to_dict("records"),
        )
    # a tile partly outside the imagery (a scene's edge, a warped margin) is no evidence of land use
    masked = ~failed & (tiles["image_nodata_pixels"] > 0)
    tiles.loc[masked, "predicted_class"] = None
    if masked.any():
        logger.info(
            "%d tiles with pixels without image data (outside the imagery, nodata, black fill) are "
            "masked (nodata), e.g. %s",
            int(masked.sum()),
            tiles.loc[masked, "tile_id"].head(3).tolist(),
        )


def _smooth_each_region(tiles: pd.DataFrame, names: list[str], smoothing: dict[str, Any]) -> None:
    """In place: ``smoothed_class``, the 3x3 smoothed prediction on each region's own grid (smoothing
    never crosses regions); the raw prediction when ``smoothing.enabled`` is false."""
    codes, lookup = class_codes(names), np.asarray([None, *names], dtype=object)
    tiles["smoothed_class"] = None
    for index in tiles.groupby("region").groups.values():  # smoothing never crosses regions
        region_tiles = tiles.loc[index]
        smoothed = to_grid(region_tiles, "predicted_class", codes)
        if smoothing.get("enabled", True):
            smoothed = smooth_classes(smoothed, len(names), float(smoothing.get("centre_weight", 2)))
        tiles.loc[index, "smoothed_class"] = lookup[smoothed[region_tiles["row"], region_tiles["col"]]]
