"""development_inference: map a region's land use from its newer imagery and find newly developed land.

A first node plans the region from the rasters' headers (the shared tiling grid of its newer
scene). Spark tasks then read every tile window of that scene, label it from the older NLCD and
score it in the same task (no tile files); the driver gets one small row per tile and makes the
rasters, GeoJSON, maps and gallery from them.
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
    tile_grid_transform,
)
from landuse_kedro.raster import (
    DROPPED,
    GeoRaster,
    Grid,
    WindowedRaster,
    class_lookup,
    read_on_grid,
    regroup_lookup,
)
from landuse_kedro.scoring import (
    WINDOW_COLUMNS,
    active_spark_session,
    check_failure_rate,
    score_windows,
)
from landuse_kedro.tiling import ScenePlan, parse_scene_key, plan_scene

logger = logging.getLogger(__name__)

Loaders = Mapping[str, Callable[[], WindowedRaster]]
WATER = "Water"
SUMMARY_COLUMNS = {"older": "older_class", "predicted": "predicted_class", "smoothed": "smoothed_class"}


# ------------------------------------------------------------------ classes of the maps

def map_classes(land_cover: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The walkthrough's three classes (``land_cover.three_class``), plus Water when kept."""
    names, _ = regroup_lookup(land_cover["classes"], land_cover["three_class"], land_cover["three_class_other"])
    return names + [WATER] if _water_mode(options) == "keep" else names


def _water_mode(options: dict[str, Any]) -> str:
    mode = options.get("water", "mask")
    if mode not in ("keep", "mask"):
        raise ValueError(f"development_inference.water must be 'keep' or 'mask', got {mode!r}.")
    return mode


def older_label_lookup(land_cover: dict[str, Any], options: dict[str, Any]) -> np.ndarray:
    """uint8 table NLCD code -> index in :func:`map_classes`: land_cover's NLCD classes regrouped to
    three, water codes to Water (or DROPPED when masked, so a mostly-water tile is masked), 0 (NLCD's
    no data) DROPPED, any other code to the "other" class (Undeveloped: the walkthrough's rest)."""
    names = map_classes(land_cover, options)
    _, regroup = regroup_lookup(land_cover["classes"], land_cover["three_class"], land_cover["three_class_other"])
    lut = regroup[class_lookup(land_cover["nlcd_to_class"], land_cover["classes"])]
    lut[lut == DROPPED] = names.index(land_cover["three_class_other"])
    lut[0] = DROPPED
    lut[list(options.get("water_codes", [11]))] = names.index(WATER) if WATER in names else DROPPED
    return lut


# ------------------------------------------------------------------ 1. the region plan

@dataclass(frozen=True)
class RegionPlan:
    """What every later node needs about the region, computed once from the rasters' headers:
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


def newer_scene(naip_scenes: Loaders, options: dict[str, Any], tiling: dict[str, Any]) -> tuple[str, WindowedRaster]:
    """The region's newer scene; refuses a missing scene and a region whose scenes are in
    different CRSs (its years would not line up tile for tile)."""
    region, year = options["region"], int(options["newer_year"])
    scenes = _region_scenes(naip_scenes, region)
    if not scenes:
        regions = sorted({parse_scene_key(key)[0] for key in naip_scenes})
        raise ValueError(f"Unknown region {region!r} (development_inference.region): the NAIP scenes are of "
                         f"regions {', '.join(regions) or 'none'}.")
    if year not in scenes:
        raise ValueError(
            f"No NAIP scene '{region}_{year}' for development_inference (region={region!r}, "
            f"newer_year={year}). Region {region!r} has the years {sorted(scenes)}."
        )
    sources = {key: naip_scenes[key]() for key in scenes.values()}
    crss = {key: source.crs.to_string() for key, source in sources.items()}
    if len(set(crss.values())) > 1 and not tiling.get("target_crs"):
        raise ValueError(
            f"The NAIP scenes of region {region!r} are in different CRSs {crss}: their tiles would not "
            "line up across years. Reproject them to one CRS, or set tiling.target_crs."
        )
    key = scenes[year]
    return key, sources[key]


def plan_region(naip_scenes: Loaders, nlcd_rasters: Loaders, land_cover: dict[str, Any],
                tiling: dict[str, Any], options: dict[str, Any]) -> RegionPlan:
    """The region's plan, from headers only: every full tile of the newer scene on the shared
    tiling grid, labelled (in the Spark tasks) with the older NLCD edition in the map classes."""
    key, scene = newer_scene(naip_scenes, options, tiling)
    nlcd_key = f"nlcd_{int(options['older_year'])}"
    if nlcd_key not in nlcd_rasters:
        raise ValueError(f"No NLCD raster '{nlcd_key}' for the older labels (older_year="
                         f"{options['older_year']}). Available: {sorted(nlcd_rasters) or 'none'}.")
    names = map_classes(land_cover, options)
    plan = plan_scene(key, scene, nlcd_rasters[nlcd_key](), older_label_lookup(land_cover, options), names, tiling)
    older_year = options.get("older_naip_year")
    older_key = f"{options['region']}_{older_year}" if older_year else None
    older_scene = naip_scenes[older_key]() if older_key in naip_scenes else None
    if older_year and older_scene is None:
        logger.warning("No NAIP scene %s: the gallery shows the older labels instead.", older_key)
    tiles = plan.tiles
    logger.info("Region %s: %d tiles (%d x %d) of scene %s on %s; older labels from %s",
                options["region"], len(tiles), tiles.n_rows, tiles.n_cols, key, plan.grid.crs.to_string(),
                nlcd_key)
    return RegionPlan(options["region"], plan, older_scene, older_key if older_scene is not None else None,
                      colour_table(names, options["colours"]))


# ------------------------------------------------------------------ 2. scoring

def score_region(region_plan: RegionPlan, scoring_model, land_cover: dict[str, Any], scoring: dict[str, Any]):
    """Every tile window of the newer scene, read, labelled and scored in Spark tasks (no tile
    files): one row per tile, a failure row for a window that cannot be read."""
    return score_windows(region_plan.newer, scoring_model, land_cover, scoring)


# ------------------------------------------------------------------ 3. per-tile classes

def classify_tiles(development_predictions, region_plan: RegionPlan, land_cover: dict[str, Any],
                   options: dict[str, Any]) -> pd.DataFrame:
    """One row per tile of the plan: grid, older label, prediction (none when scoring failed, the
    reason in ``error``), probabilities, and the 3x3 smoothed prediction."""
    active_spark_session()
    plan = region_plan.newer
    columns = ["image_id", *WINDOW_COLUMNS, "predicted_label", "predicted_label_3", "probability",
               *(f"prob_{name}" for name in land_cover["classes"]), "error"]
    tiles = development_predictions.select(*columns).toPandas().rename(columns={
        "image_id": "tile_id", "predicted_label_3": "predicted_class", "label_class": "older_class",
        "label_share": "older_share"})
    duplicated = tiles["tile_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"Tiles scored more than once: {tiles.loc[duplicated, 'tile_id'].head(3).tolist()}")
    expected = {plan.tile_id(tile.row, tile.col) for tile in plan.tiles}
    if set(tiles["tile_id"]) != expected:
        raise ValueError(f"development_predictions holds {len(set(tiles['tile_id']) - expected)} tiles that are "
                         f"not in the region plan and lacks {len(expected - set(tiles['tile_id']))}: they come "
                         "from another run; rerun from score_region.")
    tiles.insert(1, "region", region_plan.region)
    tiles["crs"] = plan.grid.crs.to_string()
    failed = tiles["error"].notna()
    tiles.loc[failed, "predicted_class"] = None
    if failed.any():
        logger.warning("%d of %d tiles have no prediction (kept as nodata), e.g. %s", int(failed.sum()),
                       len(tiles), tiles.loc[failed, ["tile_id", "error"]].head(3).to_dict("records"))
    # a tile partly outside the imagery (a scene's edge, a warped margin) is no evidence of land use
    masked = ~failed & (tiles["image_nodata_pixels"] > 0)
    tiles.loc[masked, "predicted_class"] = None
    if masked.any():
        logger.info("%d tiles with pixels outside the imagery are masked (nodata), e.g. %s", int(masked.sum()),
                    tiles.loc[masked, "tile_id"].head(3).tolist())
    names = region_plan.classes
    codes = class_codes(names)
    smoothing = options.get("smoothing") or {}
    smoothed = to_grid(tiles, "predicted_class", codes)
    if smoothing.get("enabled", True):
        smoothed = smooth_classes(smoothed, len(names), float(smoothing.get("centre_weight", 2)))
    lookup = np.asarray([None, *names], dtype=object)
    tiles["smoothed_class"] = lookup[smoothed[tiles["row"], tiles["col"]]]
    return tiles.sort_values(["row", "col"], ignore_index=True)


# ------------------------------------------------------------------ 4. analysis and outputs

def measure_agreement(development_tile_classes: pd.DataFrame, land_cover: dict[str, Any],
                      options: dict[str, Any]) -> dict[str, Any]:
    """How often the newer predictions (raw and smoothed) agree with the older labels, and how many
    tiles failed to score; disagreement is change plus model error."""
    names = map_classes(land_cover, options)
    tiles = development_tile_classes
    return {
        "region": options["region"],
        "older_year": int(options["older_year"]),
        "newer_year": int(options["newer_year"]),
        "tiles": len(tiles),
        "failed_tiles": int(tiles["error"].notna().sum()),
        "masked_tiles": int((tiles["error"].isna() & (tiles["image_nodata_pixels"] > 0)).sum()),
        "failure_reasons": {str(k): int(v) for k, v in tiles["error"].value_counts().items()},
        "predicted": agreement(tiles, names, "older_class", "predicted_class"),
        "smoothed": agreement(tiles, names, "older_class", "smoothed_class"),
    }


def check_tile_failures(development_agreement: dict[str, Any], scoring: dict[str, Any]) -> None:
    """Fail the run when too many tiles could not be read or scored (after the outputs are saved)."""
    errors = [reason for reason, count in development_agreement["failure_reasons"].items() for _ in range(count)]
    check_failure_rate(development_agreement["tiles"], errors, float(scoring.get("max_failed_fraction", 0.05)),
                       "tiles")


def select_change_candidates(development_tile_classes: pd.DataFrame, land_cover: dict[str, Any],
                             options: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Change candidates (ranked table and GeoJSON): older label in ``candidates.from_classes``,
    newer prediction (raw or smoothed, a parameter) Developed with probability >= threshold."""
    settings = options["candidates"]
    to_class = settings.get("to_class", "Developed")
    prediction = {"predicted": "predicted_class", "smoothed": "smoothed_class"}[settings.get("prediction", "predicted")]
    candidates = change_candidates(development_tile_classes, settings["from_classes"], to_class,
                                   float(settings["min_probability"]), prediction=prediction,
                                   min_older_share=float(settings.get("min_older_share", 0.0)))
    logger.info("%d change candidates (older %s covering >= %s of the tile -> %s by the %s prediction, "
                "probability >= %s)", len(candidates), settings["from_classes"],
                settings.get("min_older_share", 0.0), to_class, settings.get("prediction", "predicted"),
                settings["min_probability"])
    columns = ["rank", "tile_id", "row", "col", "change_probability", "older_class", "older_share", "predicted_class",
               "smoothed_class", "minx", "miny", "maxx", "maxy", "crs"]
    return candidates[columns], candidates_geojson(candidates, newer_column=prediction)


def class_rasters(development_tile_classes: pd.DataFrame, region_plan: RegionPlan,
                  ) -> tuple[GeoRaster, GeoRaster, GeoRaster]:
    """Older labels, predictions and smoothed predictions as GeoTIFFs of one pixel per tile,
    aligned with the scene (the tile grid's transform and CRS) and coloured like the maps."""
    tiles = development_tile_classes
    codes = class_codes(region_plan.classes)
    tile_grid = region_plan.newer.tiles
    n_rows, n_cols = tile_grid.n_rows, tile_grid.n_cols
    if (tiles["row"].max() + 1, tiles["col"].max() + 1) != (n_rows, n_cols) or len(tiles) != n_rows * n_cols:
        raise ValueError(f"The tile table has {len(tiles)} tiles, the scene's grid {n_rows} x {n_cols}: "
                         "rerun the whole development_inference pipeline.")
    transform = tile_grid_transform(tile_grid.grid.transform, 0, 0, tile_grid.tile_size)
    crs = tile_grid.grid.crs.to_string()
    nodata = {column: int((to_grid(tiles, column, codes) == NODATA).sum()) for column in SUMMARY_COLUMNS.values()}
    logger.info("Class rasters %d x %d tiles; nodata tiles: %s", n_rows, n_cols, nodata)
    return tuple(
        class_raster(to_grid(tiles, column, codes), crs, transform, region_plan.palette, f"{title} class",
                     region_plan.classes)
        for title, column in SUMMARY_COLUMNS.items()
    )


def plot_class_maps(development_tile_classes: pd.DataFrame, land_cover: dict[str, Any],
                    options: dict[str, Any]) -> Figure:
    """Older labels, newer predictions and smoothed predictions side by side."""
    names = map_classes(land_cover, options)
    codes = class_codes(names)
    tiles = development_tile_classes
    panels = {
        f"NLCD {options['older_year']} (older labels)": to_grid(tiles, "older_class", codes),
        f"NAIP {options['newer_year']} predictions": to_grid(tiles, "predicted_class", codes),
        f"NAIP {options['newer_year']} smoothed": to_grid(tiles, "smoothed_class", codes),
    }
    return class_maps(panels, names, options["colours"], f"Land use, {options['region']}")


def plot_candidate_gallery(change_candidates_table: pd.DataFrame, development_tile_classes: pd.DataFrame,
                           region_plan: RegionPlan, options: dict[str, Any]) -> Figure:
    """The top candidates, each with its 3x3 tile neighbourhood in the older NAIP year (or the older
    labels when there is no older scene) and in the newer one: only those windows are read."""
    plan = region_plan.newer
    tile_size = plan.tile_size
    older_grid = to_grid(development_tile_classes, "older_class", class_codes(region_plan.classes))
    # the GeoTIFFs' colour table as RGB, indexed by class code (nodata black)
    palette = np.asarray([rgba[:3] for _, rgba in sorted(region_plan.palette.items())], dtype=np.uint8)
    step = max(1, tile_size * 3 // int(options.get("gallery_pixels", 240)))
    items = []
    for tile in change_candidates_table.head(int(options.get("gallery_size", 12))).itertuples():
        newer = neighbourhood_rgb(plan.scene, plan.grid, tile.row, tile.col, tile_size)[::step, ::step]
        if region_plan.older_scene is not None:
            older = neighbourhood_rgb(region_plan.older_scene, plan.grid, tile.row, tile.col, tile_size)[::step, ::step]
        else:
            older = np.kron(palette[_padded(older_grid, tile.row, tile.col)],
                            np.ones((newer.shape[0] // 3, newer.shape[1] // 3, 1), dtype=np.uint8))
        items.append(GalleryItem(f"#{tile.rank} r{tile.row} c{tile.col} p={tile.change_probability:.2f}", older, newer))
    older_year = options.get("older_naip_year")
    older_title = f"NAIP {older_year}" if region_plan.older_scene is not None else f"NLCD {options['older_year']}"
    return candidate_gallery(items, older_title, f"NAIP {options['newer_year']}")


def neighbourhood_rgb(scene: WindowedRaster, grid: Grid, row: int, col: int, tile_size: int) -> np.ndarray:
    """RGB (3 tiles x 3 tiles) around tile (row, col) on ``grid``; black beyond the grid's edge."""
    out = np.zeros((3 * tile_size, 3 * tile_size, 3), dtype=np.uint8)
    row0, col0 = max(row - 1, 0), max(col - 1, 0)
    row1 = min(row + 2, grid.height // tile_size)
    col1 = min(col + 2, grid.width // tile_size)
    window = Window(col0 * tile_size, row0 * tile_size, (col1 - col0) * tile_size, (row1 - row0) * tile_size)
    pixels = read_on_grid(scene, grid, window).transpose(1, 2, 0)
    top, left = (row0 - row + 1) * tile_size, (col0 - col + 1) * tile_size
    out[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    return out


def _padded(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 3x3 codes around (row, col), nodata beyond the edge."""
    padded = np.pad(grid, 1, constant_values=NODATA)
    return padded[row:row + 3, col:col + 3]


def summarise_classes(development_tile_classes: pd.DataFrame, land_cover: dict[str, Any],
                      options: dict[str, Any]) -> pd.DataFrame:
    """Tiles and percent per class for older labels, predictions and smoothed predictions (the
    walkthrough's table), logged as well as saved."""
    table = class_summary(development_tile_classes, map_classes(land_cover, options), SUMMARY_COLUMNS)
    logger.info("Land use of %s, %d tiles:\n%s", options["region"], len(development_tile_classes),
                table.to_string(index=False))
    return table
