"""development_inference: map regions' land use from their newer imagery and find newly developed land.

A first node plans each region from the rasters' headers (the shared tiling grid of its newer
scene). Spark tasks then read every tile window of those scenes, label it from the older NLCD and
score it in the same task (no tile files); the driver gets one small row per tile and makes each
region's rasters, GeoJSON, maps and gallery (partitions keyed by region, so regions never
overwrite each other) and a mosaic of the regions' class rasters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rasterio.windows import Window

from landuse_kedro.classes import DROPPED, LandCover
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.failures import check_failure_rate, failure_counts
from landuse_kedro.parameters import as_list
from landuse_kedro.pipelines.development_inference.analysis import (
    NODATA,
    agreement,
    change_candidates,
    class_codes,
    class_summary,
    smooth_classes,
    to_grid,
)
from landuse_kedro.pipelines.development_inference.figures import (
    GalleryItem,
    candidate_gallery,
    class_maps,
)
from landuse_kedro.pipelines.development_inference.geo import (
    candidates_geojson,
    class_raster,
    colour_table,
    mosaic,
    provenance_tags,
    tile_grid_transform,
)
from landuse_kedro.raster import (
    GeoRaster,
    Grid,
    WindowedRaster,
    read_on_grid,
    require_crs,
)
from landuse_kedro.spark import active_spark_session
from landuse_kedro.tiling import ScenePlan, parse_scene_key, plan_scene
from landuse_kedro.window_jobs import WINDOW_COLUMNS, score_windows

logger = logging.getLogger(__name__)

Loaders = Mapping[str, Callable[[], WindowedRaster]]
WATER = "Water"
SUMMARY_COLUMNS = {"older": "older_class", "predicted": "predicted_class", "smoothed": "smoothed_class"}


# ------------------------------------------------------------------ classes of the maps


def map_classes(land_cover: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The classes of the maps, in code order (code i is ``map_classes[i - 1]``).

    Args:
        land_cover: ``params:land_cover``.
        options: ``params:development_inference`` (``water``: keep or mask).

    Returns:
        The 3-class names (``LandCover.three_class_names``), plus Water when ``water: keep``.
    """
    return _map_classes(LandCover.from_params(land_cover), options)


def _map_classes(land: LandCover, options: dict[str, Any]) -> list[str]:
    names = list(land.three_class_names)
    return names + [WATER] if _water_mode(options) == "keep" else names


def _water_mode(options: dict[str, Any]) -> str:
    mode = options.get("water", "mask")
    if mode not in ("keep", "mask"):
        raise ValueError(f"development_inference.water must be 'keep' or 'mask', got {mode!r}.")
    return mode


def older_label_lookup(land_cover: dict[str, Any], options: dict[str, Any]) -> np.ndarray:
    """uint8 table NLCD code -> index in :func:`map_classes`: land_cover's NLCD classes regrouped to
    three, ``land_cover.water_codes`` to Water (or DROPPED when masked, so a mostly-water tile is
    masked), no-data codes NO_LABEL and codes outside the legend UNKNOWN (a tile on them has no older
    class: never mapped to the catch-all class)."""
    if "water_codes" in options:
        raise ValueError(
            "development_inference.water_codes moved to land_cover.water_codes (both pipelines read it)."
        )
    land = LandCover.from_params(land_cover)
    names = _map_classes(land, options)
    lut = land.three_class_lookup()[land.nlcd_lookup()]
    lut[list(land.water_codes)] = names.index(WATER) if WATER in names else DROPPED
    return lut


# ------------------------------------------------------------------ 1. the region plans


def region_names(options: dict[str, Any]) -> list[str]:
    """``development_inference.regions`` as a list (:func:`landuse_kedro.parameters.as_list`: a YAML
    list, one name, or names separated by spaces, as ``--params`` gives them)."""
    regions = options["regions"]
    names = [str(name) for name in as_list(regions)]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"development_inference.regions must name distinct regions, got {regions!r}.")
    return names


@dataclass(frozen=True)
class RegionPlan:
    """What every later node needs about a region, computed once from the rasters' headers:
    the newer scene's tiling (grid, tile grid, older NLCD labels in the map classes), the older
    scene shown in the gallery, the map classes and their palette. No pixels."""

    region: str
    newer: ScenePlan
    older_scene: WindowedRaster | None
    older_scene_key: str | None
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
    naip_scenes: Loaders, region: str, options: dict[str, Any], tiling: dict[str, Any]
) -> tuple[str, WindowedRaster]:
    """The region's newer scene; refuses a missing scene and a region whose scenes are in
    different CRSs (its years would not line up tile for tile)."""
    year = int(options["newer_year"])
    scenes = _region_scenes(naip_scenes, region)
    if not scenes:
        regions = sorted({parse_scene_key(key)[0] for key in naip_scenes})
        raise ValueError(
            f"Unknown region {region!r} (development_inference.regions): the NAIP scenes are of "
            f"regions {', '.join(regions) or 'none'}."
        )
    if year not in scenes:
        raise ValueError(
            f"No NAIP scene '{region}_{year}' for development_inference (region {region!r}, "
            f"newer_year={year}). Region {region!r} has the years {sorted(scenes)}."
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
    options: dict[str, Any],
) -> dict[str, RegionPlan]:
    """Plan each region from headers only: every full tile of its newer scene on the shared tiling grid,
    to be labelled (in the Spark tasks) with the older NLCD edition in the map classes. Every region is
    checked before any is planned, so a typo fails at once.

    Args:
        naip_scenes: ``naip_scenes``, ``<region>_<year>`` -> lazy raster loader.
        nlcd_rasters: ``nlcd_rasters``, ``nlcd_<year>`` -> lazy raster loader.
        land_cover: ``params:land_cover`` (NLCD table and 3-class rule).
        tiling: ``params:tiling`` (the grid data_preparation cuts too).
        options: ``params:development_inference`` (``regions``, ``older_year``, ``newer_year``,
            ``older_naip_year``, ``water``, ``colours``).

    Returns:
        ``region_plans``: region -> :class:`RegionPlan`, in the order of ``regions``.

    Raises:
        ValueError: ``regions`` is empty, repeats a name or names a region without scenes; there is no
            NLCD edition of ``older_year`` or no scene of ``newer_year``; a region's scenes are in
            different CRSs without ``tiling.target_crs``; ``water`` is neither keep nor mask; a scene
            has no CRS, cannot give RGB tiles or does not overlap its NLCD; the NLCD is not uint8 codes
            with a CRS; a raster passes ``tiling.limits``; or NLCD codes outside the legend cover more
            than ``land_cover.max_unknown_fraction`` of the NLCD under a scene.
    """
    regions = region_names(options)
    known = sorted({parse_scene_key(key)[0] for key in naip_scenes})
    unknown = [region for region in regions if region not in known]
    if unknown:
        raise ValueError(
            f"Unknown region(s) {', '.join(map(repr, unknown))} (development_inference.regions): "
            f"the NAIP scenes are of regions {', '.join(known) or 'none'}."
        )
    nlcd_key = f"nlcd_{int(options['older_year'])}"
    if nlcd_key not in nlcd_rasters:
        raise ValueError(
            f"No NLCD raster '{nlcd_key}' for the older labels (older_year="
            f"{options['older_year']}). Available: {sorted(nlcd_rasters) or 'none'}."
        )
    scenes = {region: newer_scene(naip_scenes, region, options, tiling) for region in regions}
    names = map_classes(land_cover, options)
    lookup, nlcd = older_label_lookup(land_cover, options), nlcd_rasters[nlcd_key]()
    budget = LandCover.from_params(land_cover).max_unknown_fraction
    return {
        region: _plan_region(region, key, scene, nlcd, lookup, names, naip_scenes, tiling, options, budget)
        for region, (key, scene) in scenes.items()
    }


def _plan_region(region, key, scene, nlcd, lookup, names, naip_scenes, tiling, options, budget) -> RegionPlan:  # noqa: PLR0913, PLR0917
    nlcd_key = f"nlcd_{int(options['older_year'])}"
    plan = plan_scene(key, scene, nlcd, lookup, names, tiling, nlcd_key, max_unknown_fraction=budget)
    older_year = options.get("older_naip_year")
    older_key = f"{region}_{older_year}" if older_year else None
    older_scene = naip_scenes[older_key]() if older_key in naip_scenes else None
    if older_year and older_scene is None:
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
        options["older_year"],
    )
    return RegionPlan(
        region,
        plan,
        older_scene,
        older_key if older_scene is not None else None,
        colour_table(names, options["colours"]),
    )


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
    options: dict[str, Any],
) -> pd.DataFrame:
    """Bring the scored rows to the driver as one row per tile, checked against the plans so no output
    mixes runs; a tile that failed or reaches outside the imagery gets no prediction (nodata).

    Args:
        development_predictions: ``development_predictions`` as written (a Spark DataFrame).
        region_plans: ``region_plans`` from :func:`plan_regions`.
        land_cover: ``params:land_cover`` (the probability columns).
        options: ``params:development_inference`` (``water``, ``smoothing``).

    Returns:
        ``development_tile_classes``: per tile its region, grid cell and bounds, older class and share,
        prediction (null when failed or masked, the reason in ``error``), probabilities and the 3x3
        smoothed prediction; sorted by region, row and column.

    Raises:
        ValueError: A tile was scored twice, or the table's tiles are not exactly the plans' (it comes
            from another run).
    """
    active_spark_session()
    columns = [
        "image_id",
        *WINDOW_COLUMNS,
        "predicted_label",
        "predicted_label_3",
        "probability",
        *(f"prob_{name}" for name in LandCover.from_params(land_cover).classes),
        "error",
    ]
    tiles = (
        development_predictions.select(*columns)
        .toPandas()
        .rename(
            columns={
                "image_id": "tile_id",
                "predicted_label_3": "predicted_class",
                "label_class": "older_class",
                "label_share": "older_share",
            }
        )
    )
    duplicated = tiles["tile_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"Tiles scored more than once: {tiles.loc[duplicated, 'tile_id'].head(3).tolist()}")
    expected = {
        plan.newer.tile_id(tile.row, tile.col) for plan in region_plans.values() for tile in plan.newer.tiles
    }
    if set(tiles["tile_id"]) != expected:
        raise ValueError(
            f"development_predictions holds {len(set(tiles['tile_id']) - expected)} tiles that are "
            f"not in the region plans and lacks {len(expected - set(tiles['tile_id']))}: they come "
            "from another run; rerun from score_regions."
        )
    tiles.insert(
        1, "region", tiles["scene"].map({plan.newer.key: region for region, plan in region_plans.items()})
    )
    tiles["crs"] = tiles["region"].map(
        {region: plan.newer.grid.crs.to_string() for region, plan in region_plans.items()}
    )
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
    names = map_classes(land_cover, options)
    codes, lookup = class_codes(names), np.asarray([None, *names], dtype=object)
    smoothing = options.get("smoothing") or {}
    tiles["smoothed_class"] = None
    for index in tiles.groupby("region").groups.values():  # smoothing never crosses regions
        region_tiles = tiles.loc[index]
        smoothed = to_grid(region_tiles, "predicted_class", codes)
        if smoothing.get("enabled", True):
            smoothed = smooth_classes(smoothed, len(names), float(smoothing.get("centre_weight", 2)))
        tiles.loc[index, "smoothed_class"] = lookup[smoothed[region_tiles["row"], region_tiles["col"]]]
    order = {region: position for position, region in enumerate(region_plans)}
    return tiles.sort_values(
        ["region", "row", "col"], key=lambda c: c.map(order) if c.name == "region" else c, ignore_index=True
    )


# ------------------------------------------------------------------ 4. outputs per region


def _per_region(tiles: pd.DataFrame, options: dict[str, Any]):
    """(region, its tiles) in the order of ``development_inference.regions``."""
    for region in region_names(options):
        yield region, tiles[tiles["region"] == region]


def _this_run(partitions: Mapping[str, Callable[[], Any]], options: dict[str, Any]) -> dict[str, Any]:
    """The partitions of this run's regions, loaded (the folder may hold regions mapped earlier)."""
    missing = [region for region in region_names(options) if region not in partitions]
    if missing:
        raise ValueError(
            f"No saved outputs for region(s) {missing}: rerun the development_inference pipeline."
        )
    return {region: partitions[region]() for region in region_names(options)}


def describe_run(run_provenance: dict[str, Any], scoring_model: ModelArtifact) -> dict[str, Any]:
    """Say which run and which model made this run's maps, once for every output that carries it: a
    region's files written by two runs (one killed midway) show it.

    Args:
        run_provenance: ``run_provenance`` (the run's id and the project's version, from the hooks).
        scoring_model: ``scoring_model``: its format, precision, size, catalog version and digest.

    Returns:
        ``development_provenance``: the run's id, the project's version and the model's summary.
    """
    return {
        "run_id": run_provenance["run_id"],
        "project_version": run_provenance["project_version"],
        "model": scoring_model.summary(),
    }


def measure_agreement(
    development_tile_classes: pd.DataFrame,
    development_provenance: dict[str, Any],
    land_cover: dict[str, Any],
    options: dict[str, Any],
    region_plans: Mapping[str, RegionPlan],
) -> dict[str, dict[str, Any]]:
    """Measure per region how often the newer predictions agree with the older labels; disagreement is
    change plus model error.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        development_provenance: ``development_provenance`` from :func:`describe_run`: the run and
            the model (format, precision read from the model file itself, size, version, digest).
        land_cover: ``params:land_cover`` (the map classes).
        options: ``params:development_inference`` (``regions``, ``older_year``, ``newer_year``,
            ``water``).
        region_plans: ``region_plans`` from :func:`plan_regions` (NLCD codes outside the legend).

    Returns:
        ``development_agreement``: region -> the run id, the model, the years, tile counts (all,
        predicted, failed, masked), failure reasons grouped by cause, the older NLCD's codes outside
        the legend under the scene (NLCD pixels, counted when planned) and the agreement of raw and
        smoothed predictions with the older labels.
    """
    names = map_classes(land_cover, options)
    return {
        region: {
            "region": region,
            "run_id": development_provenance["run_id"],
            "project_version": development_provenance["project_version"],
            "model": development_provenance["model"],
            "older_year": int(options["older_year"]),
            "newer_year": int(options["newer_year"]),
            "tiles": len(tiles),
            "predicted_tiles": int(tiles["predicted_class"].notna().sum()),
            "failed_tiles": int(tiles["error"].notna().sum()),
            "masked_tiles": int((tiles["error"].isna() & (tiles["image_nodata_pixels"] > 0)).sum()),
            "failure_reasons": failure_counts(tiles["error"]),
            "unknown_nlcd_codes": {
                str(code): pixels for code, pixels in region_plans[region].newer.unknown_codes
            },
            "predicted": agreement(tiles, names, "older_class", "predicted_class"),
            "smoothed": agreement(tiles, names, "older_class", "smoothed_class"),
        }
        for region, tiles in _per_region(development_tile_classes, options)
    }


def check_tile_failures(
    development_agreement: Mapping[str, Callable[[], dict]], scoring: dict[str, Any], options: dict[str, Any]
) -> None:
    """Fail the run when too many tiles could not be read or scored, or a region has no predicted
    tile (every tile failed or masked: an empty map is no result), after the agreements are saved.
    Masked tiles (partly outside the imagery, or on its nodata) are not failures: nothing went
    wrong reading them, so they do not count against ``max_failed_fraction`` (a reprojected scene's
    warped margins would fail it); they are reported beside the failed tiles.

    Args:
        development_agreement: ``development_agreement`` as saved; only this run's regions are read.
        scoring: ``params:scoring`` (``max_failed_fraction``, default 0.05).
        options: ``params:development_inference`` (``regions``).

    Raises:
        ValueError: A region of this run has no saved agreement.
        RuntimeError: More than ``max_failed_fraction`` of the tiles failed (names the commonest
            reasons), or a region has no predicted tile.
    """
    reports = _this_run(development_agreement, options)
    empty = {
        region: f"{report['tiles']} tiles: {report['failed_tiles']} failed, {report['masked_tiles']} masked"
        for region, report in reports.items()
        if report["predicted_tiles"] == 0
    }
    if empty:
        raise RuntimeError(
            f"No tile has a prediction in region(s) {empty}: the map would be empty. Masked tiles have "
            "image nodata (outside the imagery, or its fill); see development_agreement.json."
        )
    reasons: dict[str, int] = {}
    for report in reports.values():
        for reason, count in report["failure_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    logger.info(
        "Tiles: %d predicted, %d failed, %d masked (not counted as failures)",
        *(
            sum(report[key] for report in reports.values())
            for key in ("predicted_tiles", "failed_tiles", "masked_tiles")
        ),
    )
    check_failure_rate(
        sum(report["tiles"] for report in reports.values()),
        reasons,
        float(scoring.get("max_failed_fraction", 0.05)),
        "tiles",
    )


CANDIDATE_PROPERTIES = [
    "region",
    "rank",
    "tile_id",
    "row",
    "col",
    "change_probability",
    "older_class",
    "older_share",
    "predicted_class",
    "smoothed_class",
]
"""Each candidate's fields, named alike in the CSV and the GeoJSON; the CSV adds the footprint in
the scene's CRS (minx, miny, maxx, maxy, crs), the GeoJSON has it as geometry in EPSG:4326."""


def select_change_candidates(
    development_tile_classes: pd.DataFrame, development_provenance: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Find the tiles that look newly developed: older label in ``candidates.from_classes`` covering at
    least ``min_older_share`` of the tile, newer prediction (raw or smoothed, per
    ``candidates.prediction``) ``to_class`` with probability >= ``min_probability``.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        development_provenance: ``development_provenance`` from :func:`describe_run`.
        options: ``params:development_inference`` (``regions``, ``candidates``).

    Returns:
        ``change_candidates_table``: region -> the candidates ranked by probability
        (``CANDIDATE_PROPERTIES`` and the footprint in the scene's CRS).
        ``change_candidates``: region -> the same candidates as GeoJSON in EPSG:4326, with the run
        and model that found them in its ``provenance`` member.
    """
    settings = options["candidates"]
    to_class = settings.get("to_class", "Developed")
    prediction = {"predicted": "predicted_class", "smoothed": "smoothed_class"}[
        settings.get("prediction", "predicted")
    ]
    tables, geojson = {}, {}
    for region, tiles in _per_region(development_tile_classes, options):
        candidates = change_candidates(
            tiles,
            settings["from_classes"],
            to_class,
            float(settings["min_probability"]),
            prediction=prediction,
            min_older_share=float(settings.get("min_older_share", 0.0)),
        )
        logger.info(
            "%s: %d change candidates (older %s covering >= %s of the tile -> %s by the %s prediction, "
            "probability >= %s)",
            region,
            len(candidates),
            settings["from_classes"],
            settings.get("min_older_share", 0.0),
            to_class,
            settings.get("prediction", "predicted"),
            settings["min_probability"],
        )
        tables[region] = candidates[[*CANDIDATE_PROPERTIES, "minx", "miny", "maxx", "maxy", "crs"]]
        geojson[region] = candidates_geojson(candidates, CANDIDATE_PROPERTIES, development_provenance)
    return tables, geojson


def class_rasters(
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    development_provenance: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, GeoRaster]:
    """Give GIS users the maps as rasters: per region, older labels, predictions and smoothed predictions
    at one pixel per tile, aligned with the scene (the tile grid's transform and CRS), coloured like
    the maps and tagged with region, years, run and model.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        region_plans: ``region_plans`` from :func:`plan_regions`.
        development_provenance: ``development_provenance`` from :func:`describe_run`.
        options: ``params:development_inference`` (``regions``, ``older_year``, ``newer_year``).

    Returns:
        ``region_class_rasters``: ``<region>/<older|predicted|smoothed>`` -> :class:`GeoRaster`.

    Raises:
        ValueError: The tile table does not fill a region's tile grid.
    """
    rasters = {}
    for region, tiles in _per_region(development_tile_classes, options):
        plan = region_plans[region]
        codes = class_codes(plan.classes)
        tile_grid = plan.newer.tiles
        n_rows, n_cols = tile_grid.n_rows, tile_grid.n_cols
        if (tiles["row"].max() + 1, tiles["col"].max() + 1) != (n_rows, n_cols) or len(
            tiles
        ) != n_rows * n_cols:
            raise ValueError(
                f"The tile table has {len(tiles)} tiles of {region}, the scene's grid {n_rows} x "
                f"{n_cols}: rerun the whole development_inference pipeline."
            )
        transform = tile_grid_transform(tile_grid.grid.transform, 0, 0, tile_grid.tile_size)
        crs = tile_grid.grid.crs.to_string()
        nodata = {
            column: int((to_grid(tiles, column, codes) == NODATA).sum())
            for column in SUMMARY_COLUMNS.values()
        }
        logger.info("Class rasters of %s: %d x %d tiles; nodata tiles: %s", region, n_rows, n_cols, nodata)
        for kind, column in SUMMARY_COLUMNS.items():
            tags = {
                "region": region,
                "classes": kind,
                "scene": plan.newer.key,
                "older_nlcd_year": str(options["older_year"]),
                "newer_naip_year": str(options["newer_year"]),
                **provenance_tags(development_provenance),
            }
            rasters[f"{region}/{kind}"] = class_raster(
                to_grid(tiles, column, codes),
                crs,
                transform,
                plan.palette,
                f"{kind} class, {region}",
                plan.classes,
                tags,
            )
    return rasters


def mosaic_class_rasters(
    region_class_rasters: Mapping[str, Callable[[], WindowedRaster]],
    development_provenance: dict[str, Any],
    land_cover: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, GeoRaster]:
    """Make the county map: this run's regions' class rasters merged on one grid in ``mosaic_crs``, one
    mosaic per kind, by nearest neighbour so codes stay codes; where regions overlap, the one listed
    first wins.

    Args:
        region_class_rasters: ``region_class_rasters`` as saved; only this run's regions are read.
        development_provenance: ``development_provenance`` from :func:`describe_run` (the tags).
        land_cover: ``params:land_cover`` (the map classes).
        options: ``params:development_inference`` (``regions``, ``mosaic_crs``, ``colours``, ``water``,
            ``older_year``, ``newer_year``).

    Returns:
        ``class_raster_mosaics``: ``older``, ``predicted`` and ``smoothed`` -> :class:`GeoRaster`.

    Raises:
        ValueError: A region of this run has no saved class rasters.
    """
    names = map_classes(land_cover, options)
    palette, crs = colour_table(names, options["colours"]), options.get("mosaic_crs", "EPSG:5070")
    mosaics = {}
    for kind in SUMMARY_COLUMNS:
        sources = _this_run(
            {
                key.split("/")[0]: loader
                for key, loader in region_class_rasters.items()
                if key.endswith(f"/{kind}")
            },
            options,
        )
        grid, transform = mosaic(list(sources.values()), crs, NODATA)
        tags = {
            "regions": " ".join(sources),
            "classes": kind,
            "older_nlcd_year": str(options["older_year"]),
            "newer_naip_year": str(options["newer_year"]),
            **provenance_tags(development_provenance),
        }
        mosaics[kind] = class_raster(
            grid, crs, transform, palette, f"{kind} class, {' '.join(sources)}", names, tags
        )
    logger.info(
        "Mosaics of %s on %s: %d x %d tiles",
        ", ".join(region_names(options)),
        crs,
        *mosaics["smoothed"].array.shape[1:],
    )
    return mosaics


def plot_class_maps(
    development_tile_classes: pd.DataFrame, land_cover: dict[str, Any], options: dict[str, Any]
) -> dict[str, Figure]:
    """Show per region the older labels, newer predictions and smoothed predictions side by side.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        land_cover: ``params:land_cover`` (the map classes).
        options: ``params:development_inference`` (``regions``, ``colours``, ``water``, ``older_year``,
            ``newer_year``).

    Returns:
        ``development_maps``: region -> the figure.
    """
    names = map_classes(land_cover, options)
    codes = class_codes(names)
    figures = {}
    for region, tiles in _per_region(development_tile_classes, options):
        panels = {
            f"NLCD {options['older_year']} (older labels)": to_grid(tiles, "older_class", codes),
            f"NAIP {options['newer_year']} predictions": to_grid(tiles, "predicted_class", codes),
            f"NAIP {options['newer_year']} smoothed": to_grid(tiles, "smoothed_class", codes),
        }
        figures[region] = class_maps(
            panels,
            names,
            options["colours"],
            f"Land use, {region} ({len(tiles)} tiles, {tiles['crs'].iloc[0]})",
        )
    return figures


def plot_candidate_gallery(
    change_candidates_table: Mapping[str, Callable[[], pd.DataFrame]],
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    options: dict[str, Any],
) -> dict[str, Figure]:
    """Show each region's top candidates for checking by eye: each with its 3x3 tile neighbourhood in the
    older NAIP year (or the older labels when there is no older scene) and in the newer one; only those
    windows are read.

    Args:
        change_candidates_table: ``change_candidates_table`` as saved; only this run's regions are read.
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        region_plans: ``region_plans`` from :func:`plan_regions` (the scenes to read).
        options: ``params:development_inference`` (``regions``, ``candidates.prediction``,
            ``gallery_size``, ``gallery_pixels``, ``older_naip_year``, ``older_year``, ``newer_year``).

    Returns:
        ``change_candidate_gallery``: region -> the figure.

    Raises:
        ValueError: A region of this run has no saved candidate table.
    """
    tables = _this_run(change_candidates_table, options)
    return {
        region: _gallery(tables[region], tiles, region_plans[region], options)
        for region, tiles in _per_region(development_tile_classes, options)
    }


def _gallery(
    candidates: pd.DataFrame, tiles: pd.DataFrame, region_plan: RegionPlan, options: dict[str, Any]
) -> Figure:
    plan = region_plan.newer
    tile_size = plan.tile_size
    older_grid = to_grid(tiles, "older_class", class_codes(region_plan.classes))
    # the GeoTIFFs' colour table as RGB, indexed by class code (nodata black)
    palette = np.asarray([rgba[:3] for _, rgba in sorted(region_plan.palette.items())], dtype=np.uint8)
    step = max(1, tile_size * 3 // int(options.get("gallery_pixels", 240)))
    newer_column = {"predicted": "predicted_class", "smoothed": "smoothed_class"}[
        options["candidates"].get("prediction", "predicted")
    ]
    items = []
    for tile in candidates.head(int(options.get("gallery_size", 12))).itertuples():
        newer = neighbourhood_rgb(plan.scene, plan.grid, tile.row, tile.col, tile_size)[::step, ::step]
        if region_plan.older_scene is not None:
            older = neighbourhood_rgb(region_plan.older_scene, plan.grid, tile.row, tile.col, tile_size)[
                ::step, ::step
            ]
        else:
            older = np.kron(
                palette[_padded(older_grid, tile.row, tile.col)],
                np.ones((newer.shape[0] // 3, newer.shape[1] // 3, 1), dtype=np.uint8),
            )
        centre_x, centre_y = (tile.minx + tile.maxx) / 2, (tile.miny + tile.maxy) / 2
        items.append(
            GalleryItem(
                f"#{tile.rank} {tile.older_class} \N{RIGHTWARDS ARROW} {getattr(tile, newer_column)}, "
                f"p={tile.change_probability:.3f}\n"
                f"row {tile.row} col {tile.col}, centre {centre_x:.0f} E {centre_y:.0f} N",
                older,
                newer,
            )
        )
    older_year = options.get("older_naip_year")
    older_title = (
        f"NAIP {older_year}" if region_plan.older_scene is not None else f"NLCD {options['older_year']}"
    )
    title = (
        f"Change candidates, {region_plan.region} (top {len(items)} of {len(candidates)}; "
        f"coordinates in {plan.grid.crs.to_string()})"
    )
    return candidate_gallery(items, older_title, f"NAIP {options['newer_year']}", title)


def neighbourhood_rgb(scene: WindowedRaster, grid: Grid, row: int, col: int, tile_size: int) -> np.ndarray:
    """RGB (3 tiles x 3 tiles) around tile (row, col) on ``grid``; black beyond the grid's edge."""
    out = np.zeros((3 * tile_size, 3 * tile_size, 3), dtype=np.uint8)
    row0, col0 = max(row - 1, 0), max(col - 1, 0)
    row1 = min(row + 2, grid.height // tile_size)
    col1 = min(col + 2, grid.width // tile_size)
    window = Window(col0 * tile_size, row0 * tile_size, (col1 - col0) * tile_size, (row1 - row0) * tile_size)
    pixels = read_on_grid(scene, grid, window).transpose(1, 2, 0)
    top, left = (row0 - row + 1) * tile_size, (col0 - col + 1) * tile_size
    out[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return out


def _padded(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 3x3 codes around (row, col), nodata beyond the edge."""
    padded = np.pad(grid, 1, constant_values=NODATA)
    return padded[row : row + 3, col : col + 3]


def summarise_classes(
    development_tile_classes: pd.DataFrame, land_cover: dict[str, Any], options: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    """Tabulate each region's land use (the walkthrough's table), logged as well as saved.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        land_cover: ``params:land_cover`` (the map classes).
        options: ``params:development_inference`` (``regions``, ``water``).

    Returns:
        ``development_summary``: region -> tiles and percent per class (and nodata) for older labels,
        predictions and smoothed predictions.
    """
    names = map_classes(land_cover, options)
    tables = {}
    for region, tiles in _per_region(development_tile_classes, options):
        table = class_summary(tiles, names, SUMMARY_COLUMNS)
        logger.info("Land use of %s, %d tiles:\n%s", region, len(tiles), table.to_string(index=False))
        tables[region] = table.assign(region=region)[["region", *table.columns]]
    return tables
