"""The maps of land use: each region's class rasters, maps and candidate gallery; the regions' mosaic.

Each region's outputs are partitions keyed by region, so regions mapped by different runs never
overwrite each other; the mosaic and the gallery read back only this run's regions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rasterio.windows import Window

from landuse_kedro.pipelines.development_inference.analysis import NODATA, class_codes, to_grid
from landuse_kedro.pipelines.development_inference.figures import (
    GalleryItem,
    candidate_gallery,
    class_maps,
)
from landuse_kedro.pipelines.development_inference.geo import (
    class_raster,
    colour_table,
    mosaic,
    provenance_tags,
    tile_grid_transform,
)
from landuse_kedro.pipelines.development_inference.inference import CLASS_COLUMNS, RegionPlan
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    per_region,
    region_names,
    this_run,
)
from landuse_kedro.raster import GeoRaster, Grid, WindowedRaster, read_on_grid

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ rasters


def class_rasters(
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    development_provenance: dict[str, Any],
    development_inference: dict[str, Any],
) -> dict[str, GeoRaster]:
    """Give GIS users the maps as rasters: per region, older labels, predictions and smoothed predictions
    at one pixel per tile, aligned with the scene (the tile grid's transform and CRS), coloured like
    the maps and tagged with region, years, run and model.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        region_plans: ``region_plans`` from :func:`plan_regions`.
        development_provenance: ``development_provenance`` from :func:`describe_run`.
        development_inference: ``params:development_inference`` (``regions``, ``older_nlcd_year``,
            ``newer_naip_year``).

    Returns:
        ``region_class_rasters``: ``<region>/<older|predicted|smoothed>`` -> :class:`GeoRaster`.

    Raises:
        ValueError: The tile table does not fill a region's tile grid.
    """
    rasters = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
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
            column: int((to_grid(tiles, column, codes) == NODATA).sum()) for column in CLASS_COLUMNS.values()
        }
        logger.info("Class rasters of %s: %d x %d tiles; nodata tiles: %s", region, n_rows, n_cols, nodata)
        for kind, column in CLASS_COLUMNS.items():
            tags = {
                "region": region,
                "classes": kind,
                "scene": plan.newer.key,
                "older_nlcd_year": str(development_inference["older_nlcd_year"]),
                "newer_naip_year": str(development_inference["newer_naip_year"]),
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
    development_inference: dict[str, Any],
) -> dict[str, GeoRaster]:
    """Make the county map: this run's regions' class rasters merged on one grid in ``mosaic_crs``, one
    mosaic per kind, by nearest neighbour so codes stay codes; where regions overlap, the one listed
    first wins.

    Args:
        region_class_rasters: ``region_class_rasters`` as saved; only this run's regions are read.
        development_provenance: ``development_provenance`` from :func:`describe_run` (the tags).
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``regions``, ``mosaic_crs``,
            ``colours``, ``water``, ``older_nlcd_year``, ``newer_naip_year``).

    Returns:
        ``class_raster_mosaics``: ``older``, ``predicted`` and ``smoothed`` -> :class:`GeoRaster`.

    Raises:
        ValueError: A region of this run has no saved class rasters.
    """
    names = map_classes(land_cover, development_inference)
    palette = colour_table(names, development_inference["colours"])
    crs = development_inference.get("mosaic_crs", "EPSG:5070")
    mosaics = {}
    for kind in CLASS_COLUMNS:
        sources = this_run(
            {
                key.split("/")[0]: loader
                for key, loader in region_class_rasters.items()
                if key.endswith(f"/{kind}")
            },
            development_inference,
        )
        grid, transform = mosaic(list(sources.values()), crs, NODATA)
        tags = {
            "regions": " ".join(sources),
            "classes": kind,
            "older_nlcd_year": str(development_inference["older_nlcd_year"]),
            "newer_naip_year": str(development_inference["newer_naip_year"]),
            **provenance_tags(development_provenance),
        }
        mosaics[kind] = class_raster(
            grid, crs, transform, palette, f"{kind} class, {' '.join(sources)}", names, tags
        )
    logger.info(
        "Mosaics of %s on %s: %d x %d tiles",
        ", ".join(region_names(development_inference)),
        crs,
        *mosaics["smoothed"].array.shape[1:],
    )
    return mosaics


# ------------------------------------------------------------------ figures


def plot_class_maps(
    development_tile_classes: pd.DataFrame, land_cover: dict[str, Any], development_inference: dict[str, Any]
) -> dict[str, Figure]:
    """Show per region the older labels, newer predictions and smoothed predictions side by side.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``regions``, ``colours``, ``water``,
            ``older_nlcd_year``, ``newer_naip_year``).

    Returns:
        ``development_maps``: region -> the figure.
    """
    names = map_classes(land_cover, development_inference)
    codes = class_codes(names)
    older_nlcd_year = development_inference["older_nlcd_year"]
    newer_naip_year = development_inference["newer_naip_year"]
    figures = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        panels = {
            f"NLCD {older_nlcd_year} (older labels)": to_grid(tiles, "older_class", codes),
            f"NAIP {newer_naip_year} predictions": to_grid(tiles, "predicted_class", codes),
            f"NAIP {newer_naip_year} smoothed": to_grid(tiles, "smoothed_class", codes),
        }
        figures[region] = class_maps(
            panels,
            names,
            development_inference["colours"],
            f"Land use, {region} ({len(tiles)} tiles, {tiles['crs'].iloc[0]})",
        )
    return figures


def plot_candidate_gallery(
    change_candidates_table: Mapping[str, Callable[[], pd.DataFrame]],
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    development_inference: dict[str, Any],
) -> dict[str, Figure]:
    """Show each region's top candidates for checking by eye: each with its 3x3 tile neighbourhood in the
    older NAIP year (or the older labels when there is no older scene) and in the newer one; only those
    windows are read.

    Args:
        change_candidates_table: ``change_candidates_table`` as saved; only this run's regions are read.
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        region_plans: ``region_plans`` from :func:`plan_regions` (the scenes to read).
        development_inference: ``params:development_inference`` (``regions``, ``candidates.prediction``,
            ``gallery_size``, ``gallery_pixels``, ``older_naip_year``, ``older_nlcd_year``,
            ``newer_naip_year``).

    Returns:
        ``change_candidate_gallery``: region -> the figure.

    Raises:
        ValueError: A region of this run has no saved candidate table.
    """
    tables = this_run(change_candidates_table, development_inference)
    return {
        region: _gallery(tables[region], tiles, region_plans[region], development_inference)
        for region, tiles in per_region(development_tile_classes, development_inference)
    }


def _gallery(
    candidates: pd.DataFrame,
    tiles: pd.DataFrame,
    region_plan: RegionPlan,
    development_inference: dict[str, Any],
) -> Figure:
    plan = region_plan.newer
    tile_size = plan.tile_size
    older_grid = to_grid(tiles, "older_class", class_codes(region_plan.classes))
    # the GeoTIFFs' colour table as RGB, indexed by class code (nodata black)
    palette = np.asarray([rgba[:3] for _, rgba in sorted(region_plan.palette.items())], dtype=np.uint8)
    step = max(1, tile_size * 3 // int(development_inference.get("gallery_pixels", 240)))
    newer_column = {"predicted": "predicted_class", "smoothed": "smoothed_class"}[
        development_inference["candidates"].get("prediction", "predicted")
    ]
    items = []
    for tile in candidates.head(int(development_inference.get("gallery_size", 12))).itertuples():
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
    older_naip_year = development_inference.get("older_naip_year")
    older_title = (
        f"NAIP {older_naip_year}"
        if region_plan.older_scene is not None
        else f"NLCD {development_inference['older_nlcd_year']}"
    )
    title = (
        f"Change candidates, {region_plan.region} (top {len(items)} of {len(candidates)}; "
        f"coordinates in {plan.grid.crs.to_string()})"
    )
    return candidate_gallery(items, older_title, f"NAIP {development_inference['newer_naip_year']}", title)


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
