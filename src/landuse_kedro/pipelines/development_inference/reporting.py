"""The tables and checks of a run: provenance, agreement, failure check, change candidates, summary.

The per-region tables come from ``development_tile_classes`` (one row per tile), one partition per
region in the order of ``development_inference.regions``; the failure check reads the saved agreements
back, so it fails the run only once they are written. The maps of the same table are in maps.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.failures import check_failure_rate, failure_counts
from landuse_kedro.pipelines.development_inference.analysis import (
    agreement,
    change_candidates,
    class_summary,
)
from landuse_kedro.pipelines.development_inference.geo import candidates_geojson
from landuse_kedro.pipelines.development_inference.inference import CLASS_COLUMNS, RegionPlan
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    per_region,
    prediction_column,
    this_run,
)

logger = logging.getLogger(__name__)

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
    development_inference: dict[str, Any],
    region_plans: Mapping[str, RegionPlan],
) -> dict[str, dict[str, Any]]:
    """Measure per region how often the newer predictions agree with the older labels; disagreement is
    change plus model error.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        development_provenance: ``development_provenance`` from :func:`describe_run`: the run and
            the model (format, precision read from the model file itself, size, version, digest).
        development_inference: ``params:development_inference`` (``regions``, ``older_nlcd_year``,
            ``newer_naip_year``, ``water``).
        region_plans: ``region_plans`` from :func:`plan_regions` (the map classes, NLCD codes outside
            the legend).

    Returns:
        ``development_agreement``: region -> the run id, the model, the years, tile counts (all,
        predicted, failed, masked), failure reasons grouped by cause, the older NLCD's codes outside
        the legend under the scene (NLCD pixels, counted when planned) and the agreement of raw and
        smoothed predictions with the older labels.
    """
    names = next(iter(region_plans.values())).classes  # the map classes, as the plans hold them
    return {
        region: {
            "region": region,
            "run_id": development_provenance["run_id"],
            "project_version": development_provenance["project_version"],
            "model": development_provenance["model"],
            "older_nlcd_year": int(development_inference["older_nlcd_year"]),
            "newer_naip_year": int(development_inference["newer_naip_year"]),
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
        for region, tiles in per_region(development_tile_classes, development_inference)
    }


def check_tile_failures(
    development_agreement: Mapping[str, Callable[[], dict]],
    scoring: dict[str, Any],
    development_inference: dict[str, Any],
) -> None:
    """Fail the run when too many tiles could not be read or scored, or a region has no predicted
    tile (every tile failed or masked: an empty map is no result), after the agreements are saved.
    Masked tiles (partly outside the imagery, or on its nodata) are not failures: nothing went
    wrong reading them, so they do not count against ``max_failed_fraction`` (a reprojected scene's
    warped margins would fail it); they are reported beside the failed tiles.

    Args:
        development_agreement: ``development_agreement`` as saved; only this run's regions are read.
        scoring: ``params:scoring`` (``max_failed_fraction``, default 0.05).
        development_inference: ``params:development_inference`` (``regions``).

    Raises:
        ValueError: A region of this run has no saved agreement.
        RuntimeError: More than ``max_failed_fraction`` of the tiles failed (names the commonest
            reasons), or a region has no predicted tile.
    """
    reports = this_run(development_agreement, development_inference)
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


def select_change_candidates(
    development_tile_classes: pd.DataFrame,
    development_provenance: dict[str, Any],
    development_inference: dict[str, Any],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Find the tiles that look newly developed: older label in ``candidates.from_classes`` covering at
    least ``min_older_share`` of the tile, newer prediction (raw or smoothed, per
    ``candidates.prediction``) ``to_class`` with probability >= ``min_probability``.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        development_provenance: ``development_provenance`` from :func:`describe_run`.
        development_inference: ``params:development_inference`` (``regions``, ``candidates``).

    Returns:
        ``change_candidates_table``: region -> the candidates ranked by probability
        (``CANDIDATE_PROPERTIES`` and the footprint in the scene's CRS).
        ``change_candidates``: region -> the same candidates as GeoJSON in EPSG:4326, with the run
        and model that found them in its ``provenance`` member.
    """
    settings = development_inference["candidates"]
    to_class = settings.get("to_class", "Developed")
    prediction = prediction_column(development_inference)
    tables, geojson = {}, {}
    for region, tiles in per_region(development_tile_classes, development_inference):
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


def summarise_classes(
    development_tile_classes: pd.DataFrame, land_cover: dict[str, Any], development_inference: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    """Tabulate each region's land use (the walkthrough's table), logged as well as saved.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``regions``, ``water``).

    Returns:
        ``development_summary``: region -> tiles and percent per class (and nodata) for older labels,
        predictions and smoothed predictions.
    """
    names = map_classes(land_cover, development_inference)
    tables = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        table = class_summary(tiles, names, CLASS_COLUMNS)
        logger.info("Land use of %s, %d tiles:\n%s", region, len(tiles), table.to_string(index=False))
        tables[region] = table.assign(region=region)[["region", *table.columns]]
    return tables


TILE_TABLE_DROPPED = ["minx", "miny", "maxx", "maxy", "crs", "scene", "row_off", "col_off", "width", "height"]
"""Columns the GeoParquet table carries as its geometry and CRS instead (the footprint), or that name
pixels of the scene rather than the tile."""


def tile_tables(
    development_tile_classes: pd.DataFrame, development_inference: dict[str, Any]
) -> dict[str, Any]:
    """Each region's per-tile table as a GeoDataFrame of tile footprints in the scene's CRS: classes,
    probabilities, failures, as GIS tools and geopandas open it (GeoParquet). Per region, since regions
    may lie in different UTM zones and a GeoParquet geometry column has one CRS.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        development_inference: ``params:development_inference`` (``regions``).

    Returns:
        ``tile_tables``: region -> GeoDataFrame, one row and one square footprint per tile.
    """
    import geopandas as gpd
    from shapely import box

    tables = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        crs = tiles["crs"].unique()
        if len(crs) != 1:
            raise ValueError(f"Region {region}'s tiles are in {len(crs)} CRSs {list(crs)}: one expected.")
        footprints = box(tiles["minx"], tiles["miny"], tiles["maxx"], tiles["maxy"])
        columns = [c for c in tiles.columns if c not in TILE_TABLE_DROPPED]
        tables[region] = gpd.GeoDataFrame(
            tiles[columns].reset_index(drop=True), geometry=list(footprints), crs=crs[0]
        )
    return tables
