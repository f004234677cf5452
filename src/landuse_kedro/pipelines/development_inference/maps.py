"""The maps of land use: each region's class and probability rasters, maps and candidate gallery; the
regions' mosaics.

Each region's outputs are partitions keyed by region, so regions mapped by different runs never
overwrite each other; the mosaic and the gallery read back only this run's regions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from matplotlib.figure import Figure
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.geotiff import RasterSource, ScaledRaster
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
    mosaic_bands,
    provenance_tags,
    tile_grid_transform,
)
from landuse_kedro.pipelines.development_inference.inference import CLASS_COLUMNS, RegionPlan
from landuse_kedro.pipelines.development_inference.params import (
    map_classes,
    per_region,
    prediction_column,
    region_names,
    this_run,
)
from landuse_kedro.raster import GeoRaster, Grid, WindowedRaster, read_on_grid

logger = logging.getLogger(__name__)

PROBABILITY_CODES = 250
"""A probability p is stored as the uint8 code round(p * 250): steps of 0.004, and GDAL's band scale
1/250 gives p back; 250 rather than 255 so the scale is exact in decimal and 255 stays free."""
PROBABILITY_NODATA = 255
CHANGE_BAND = "change_probability"


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
        crs, transform, (n_rows, n_cols) = _tile_raster_grid(tiles, plan)
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


def _tile_raster_grid(tiles: pd.DataFrame, plan: RegionPlan) -> tuple[str, Affine, tuple[int, int]]:
    """CRS, transform and (rows, cols) of a region's one-pixel-per-tile rasters: the scene's tile grid,
    which the tile table must fill (else it is another run's, or a partial one)."""
    tile_grid = plan.newer.tiles
    n_rows, n_cols = tile_grid.n_rows, tile_grid.n_cols
    if (tiles["row"].max() + 1, tiles["col"].max() + 1) != (n_rows, n_cols) or len(tiles) != n_rows * n_cols:
        raise ValueError(
            f"The tile table has {len(tiles)} tiles of {plan.region}, the scene's grid {n_rows} x "
            f"{n_cols}: rerun the whole development_inference pipeline."
        )
    transform = tile_grid_transform(tile_grid.grid.transform, 0, 0, tile_grid.tile_size)
    return tile_grid.grid.crs.to_string(), transform, (n_rows, n_cols)


def probability_rasters(
    development_tile_classes: pd.DataFrame,
    region_plans: dict[str, RegionPlan],
    development_provenance: dict[str, Any],
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> dict[str, ScaledRaster]:
    """Give GIS users how sure the model is, not only its verdict: per region one raster on the class
    rasters' grid (one pixel per tile) with a band per model class probability and a last band, the
    change probability (``candidates.to_class``'s probability where the older class is one of
    ``candidates.from_classes``, 0 on other scored tiles), so a threshold other than
    ``candidates.min_probability`` can be drawn in the GIS. uint8 codes round(p * 250) with GDAL
    scale 1/250 (a GIS reads p); nodata 255 where the predicted class raster has nodata (failed or
    masked tiles); QGIS styles the change band white -> red from 0 to 1.

    Args:
        development_tile_classes: ``development_tile_classes`` from :func:`classify_tiles`.
        region_plans: ``region_plans`` from :func:`plan_regions`.
        development_provenance: ``development_provenance`` from :func:`describe_run`.
        land_cover: ``params:land_cover`` (the model classes, in band order).
        development_inference: ``params:development_inference`` (``regions``, ``candidates.to_class``,
            ``candidates.from_classes``, ``older_nlcd_year``, ``newer_naip_year``).

    Returns:
        ``region_probability_rasters``: region -> a :class:`ScaledRaster` of bands ``prob_<class>``
        (``land_cover.classes`` order) and ``change_probability``.

    Raises:
        ValueError: The tile table does not fill a region's tile grid, or lacks a probability column
            (of a model class or of ``candidates.to_class``).
    """
    bands = [f"prob_{name}" for name in LandCover.from_params(land_cover).classes]
    settings = development_inference["candidates"]
    to_class = settings.get("to_class", "Developed")
    from_classes = [str(name) for name in settings["from_classes"]]
    missing = sorted({*bands, f"prob_{to_class}"} - set(development_tile_classes.columns))
    if missing:
        raise ValueError(
            f"development_tile_classes has no column {missing}: candidates.to_class must be a model "
            "class (land_cover.classes) and the table this run's; rerun from classify_tiles."
        )
    rasters = {}
    for region, tiles in per_region(development_tile_classes, development_inference):
        plan = region_plans[region]
        crs, transform, shape = _tile_raster_grid(tiles, plan)
        probabilities = tiles[bands].to_numpy(dtype=float)
        change = np.where(tiles["older_class"].isin(from_classes), tiles[f"prob_{to_class}"], 0.0)
        values = np.column_stack([probabilities, change])
        # a tile without a prediction (failed, or masked: no evidence of land use) has no probability
        scored = tiles["predicted_class"].notna().to_numpy() & ~np.isnan(values).any(axis=1)
        codes = np.rint(np.clip(np.nan_to_num(values), 0, 1) * PROBABILITY_CODES).astype(np.uint8)
        codes[~scored] = PROBABILITY_NODATA
        array = np.full((len(bands) + 1, *shape), PROBABILITY_NODATA, dtype=np.uint8)
        array[:, tiles["row"].to_numpy(), tiles["col"].to_numpy()] = codes.T
        logger.info(
            "Probability raster of %s: %d x %d tiles, %d without probabilities",
            region,
            *shape,
            (~scored).sum(),
        )
        tags = {
            "region": region,
            "scene": plan.newer.key,
            **_probability_tags(to_class, from_classes, development_inference),
            **provenance_tags(development_provenance),
        }
        rasters[region] = _probability_raster(array, crs, transform, (*bands, CHANGE_BAND), tags)
    return rasters


def mosaic_probability_rasters(
    probability_rasters_partitions: Mapping[str, Callable[[], RasterSource]],
    development_provenance: dict[str, Any],
    development_inference: dict[str, Any],
) -> ScaledRaster:
    """Make the county's probability map: this run's regions' probability rasters merged on one grid
    in ``mosaic_crs`` by nearest neighbour, as the class mosaic is: resampling that averages would
    blend neighbouring tiles into probabilities no tile has. A cell takes all its bands from one
    region, the one listed first where regions overlap.

    Args:
        probability_rasters_partitions: ``region_probability_rasters`` as saved; only this run's
            regions are read.
        development_provenance: ``development_provenance`` from :func:`describe_run` (the tags).
        development_inference: ``params:development_inference`` (``regions``, ``mosaic_crs``,
            ``candidates``, ``older_nlcd_year``, ``newer_naip_year``).

    Returns:
        ``probability_raster_mosaics``: the merged :class:`ScaledRaster`, bands as the regions'.

    Raises:
        ValueError: A region of this run has no saved probability raster, or the regions' bands differ
            (rasters of runs with different model classes).
    """
    sources = this_run(probability_rasters_partitions, development_inference)
    names = {region: tuple(source.descriptions) for region, source in sources.items()}
    if len(set(names.values())) != 1:
        raise ValueError(
            f"The regions' probability rasters have different bands, {names}: rerun the "
            "development_inference pipeline for all of them."
        )
    bands = next(iter(names.values()))
    crs = development_inference.get("mosaic_crs", "EPSG:5070")
    array, transform = mosaic_bands(list(sources.values()), crs, PROBABILITY_NODATA, len(bands))
    settings = development_inference["candidates"]
    tags = {
        "regions": " ".join(sources),
        **_probability_tags(
            settings.get("to_class", "Developed"),
            [str(n) for n in settings["from_classes"]],
            development_inference,
        ),
        **provenance_tags(development_provenance),
    }
    logger.info("Probability mosaic of %s on %s: %d x %d tiles", ", ".join(sources), crs, *array.shape[1:])
    return _probability_raster(array, crs, transform, bands, tags)


def _probability_tags(
    to_class: str, from_classes: list[str], development_inference: dict[str, Any]
) -> dict[str, str]:
    """What the bands hold, for a reader who finds the file alone."""
    return {
        "encoding": f"probability = value / {PROBABILITY_CODES}; {PROBABILITY_NODATA}: no probability",
        CHANGE_BAND: f"probability of {to_class} where the older class is one of {', '.join(from_classes)}",
        "older_nlcd_year": str(development_inference["older_nlcd_year"]),
        "newer_naip_year": str(development_inference["newer_naip_year"]),
    }


def _probability_raster(
    array: np.ndarray, crs: str, transform: Affine, bands: tuple[str, ...], tags: dict[str, str]
) -> ScaledRaster:
    """Codes with scale 1/250 on every band (GIS reads probabilities), band names as descriptions,
    and the last band, the change probability, QGIS's default style over 0 .. 1."""
    return ScaledRaster(
        array=array,
        crs=crs,
        transform=transform,
        nodata=PROBABILITY_NODATA,
        descriptions=bands,
        tags=tags,
        scales=(1 / PROBABILITY_CODES,) * len(bands),
        offsets=(0.0,) * len(bands),
        ramp_band=len(bands),
        ramp_codes=(0, PROBABILITY_CODES),
    )


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
    newer_column = prediction_column(development_inference)
    shown = candidates.head(int(development_inference.get("gallery_size", 12)))
    items = gallery_items(
        shown,
        tiles,
        region_plan,
        development_inference,
        lambda tile: (
            f"#{tile.rank} {tile.older_class} \N{RIGHTWARDS ARROW} {getattr(tile, newer_column)}, "
            f"p={tile.change_probability:.3f}"
        ),
    )
    title = (
        f"Change candidates, {region_plan.region} (top {len(items)} of {len(candidates)}; "
        f"coordinates in {region_plan.newer.grid.crs.to_string()})"
    )
    return candidate_gallery(items, *gallery_years(region_plan, development_inference), title)


def gallery_items(
    rows: pd.DataFrame,
    tiles: pd.DataFrame,
    region_plan: RegionPlan,
    development_inference: dict[str, Any],
    caption: Callable[[Any], str],
) -> list[GalleryItem]:
    """Each row's tile with its 3 x 3 neighbourhood in the older NAIP year (or the older labels'
    colours without an older scene) and the newer one, captioned ``caption(row)`` plus where it is;
    only those windows are read."""
    plan = region_plan.newer
    tile_size = plan.tile_size
    older_grid = to_grid(tiles, "older_class", class_codes(region_plan.classes))
    # the GeoTIFFs' colour table as RGB, indexed by class code (nodata black)
    palette = np.asarray([rgba[:3] for _, rgba in sorted(region_plan.palette.items())], dtype=np.uint8)
    step = max(1, tile_size * 3 // int(development_inference.get("gallery_pixels", 240)))
    items = []
    for tile in rows.itertuples():
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
        where = f"row {tile.row} col {tile.col}, centre {centre_x:.0f} E {centre_y:.0f} N"
        items.append(GalleryItem(f"{caption(tile)}\n{where}", older, newer))
    return items


def gallery_years(region_plan: RegionPlan, development_inference: dict[str, Any]) -> tuple[str, str]:
    """The two panels' titles: the older NAIP year (or the older NLCD edition), the newer NAIP year."""
    older = (
        f"NAIP {development_inference.get('older_naip_year')}"
        if region_plan.older_scene is not None
        else f"NLCD {development_inference['older_nlcd_year']}"
    )
    return older, f"NAIP {development_inference['newer_naip_year']}"


def neighbourhood_rgb(scene: WindowedRaster, grid: Grid, row: int, col: int, tile_size: int) -> np.ndarray:
    """RGB (3 tiles x 3 tiles) around tile (row, col) on ``grid``; black beyond the grid's edge and
    where a damaged block makes a tile unreadable (then read tile by tile, and logged): a figure must
    not fail the run over a neighbour's pixels."""
    out = np.zeros((3 * tile_size, 3 * tile_size, 3), dtype=np.uint8)
    row0, col0 = max(row - 1, 0), max(col - 1, 0)
    row1 = min(row + 2, grid.height // tile_size)
    col1 = min(col + 2, grid.width // tile_size)
    window = Window(col0 * tile_size, row0 * tile_size, (col1 - col0) * tile_size, (row1 - row0) * tile_size)
    try:
        blocks = [((row0, col0), read_on_grid(scene, grid, window))]
    except RasterioIOError:
        blocks = []
        for r, c in ((r, c) for r in range(row0, row1) for c in range(col0, col1)):
            try:
                tile = Window(c * tile_size, r * tile_size, tile_size, tile_size)
                blocks.append(((r, c), read_on_grid(scene, grid, tile)))
            except RasterioIOError as error:
                logger.warning("Gallery: tile row %d col %d is unreadable, shown black (%s)", r, c, error)
    for (r, c), pixels in blocks:
        top, left = (r - row + 1) * tile_size, (c - col + 1) * tile_size
        out[top : top + pixels.shape[1], left : left + pixels.shape[2]] = pixels.transpose(1, 2, 0)
    return out


def _padded(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 3x3 codes around (row, col), nodata beyond the edge."""
    padded = np.pad(grid, 1, constant_values=NODATA)
    return padded[row : row + 3, col : col + 3]
