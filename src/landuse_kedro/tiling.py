"""Cutting a scene into labelled tiles: the one tiling used by data_preparation (training tiles)
and development_inference (every tile of a region), so both see the same grid, reprojection and labels."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from landuse_kedro.raster import (
    DROPPED,
    NO_LABEL,
    Grid,
    TileGrid,
    WindowedRaster,
    label_fill,
    labels_on_grid,
    overlaps,
    plurality,
    read_on_grid,
    scene_grid,
    tile_value_counts,
    to_classes,
    valid_on_grid,
)

logger = logging.getLogger(__name__)

BLOCK_TILES = 8
"""Tiles per block side read at once: 8 x 224 px = 1,792 px, about 3 MB per band."""
REJECT_REASONS = IMAGE_NODATA, OUTSIDE_LABELS, DROPPED_DOMINANT, IMPURE = (
    "image_nodata", "outside_labels", "dropped_dominant", "impure")
PROGRESS_EVERY = 250
_SCENE_KEY = re.compile(r"^(?P<region>.+)_(?P<year>\d{4})$")


def parse_scene_key(key: str) -> tuple[str, int]:
    match = _SCENE_KEY.match(key)
    if not match:
        raise ValueError(f"NAIP scene '{key}' is not named <region>_<year> (e.g. middlesex_2016).")
    return match["region"], int(match["year"])


def nearest_year(year: int, available: Mapping[int, Any]) -> int:
    """The label year closest to an image year; on a tie the older one (land cover was mapped
    before the change the newer map may already show)."""
    return min(available, key=lambda candidate: (abs(candidate - year), candidate))


def label_scene(key: str, scene: WindowedRaster, nlcd: WindowedRaster, lut: np.ndarray,  # noqa: PLR0917
                classes: list[str], options: dict[str, Any]) -> pd.DataFrame:
    """One row per full tile of ``scene``: labels reprojected block by block onto its grid."""
    grid = tiling_grid(key, scene, options)
    if not overlaps(scene, nlcd):
        raise ValueError(f"Scene '{key}' (bounds {tuple(round(v) for v in scene.bounds)} in "
                         f"{scene.crs.to_string()}) does not overlap the NLCD raster it was paired with "
                         f"(bounds {tuple(round(v) for v in nlcd.bounds)} in {nlcd.crs.to_string()}).")
    tiles = TileGrid(grid, int(options["tile_size"]))
    if len(tiles) == 0:
        raise ValueError(f"Scene '{key}' ({grid.width} x {grid.height} px) is smaller than one "
                         f"{tiles.tile_size} px tile.")
    fill = label_fill(nlcd)
    blocks = [
        _label_block(tiles, block, scene=scene, nlcd=nlcd, lut=lut, fill=fill, n_classes=len(classes))
        for block in tiles.blocks(BLOCK_TILES)
    ]
    frame = pd.concat(blocks, ignore_index=True).sort_values(["row", "col"], ignore_index=True)
    frame["class_name"] = np.where(frame.pop("class_pixels") > 0,
                                   np.asarray(classes, dtype=object)[frame.pop("class_index")], None)
    frame["reject_reason"] = _reject_reasons(frame, float(options.get("min_purity", 0.9)))
    frame.insert(0, "tile_id", [f"{key}_r{r:04d}_c{c:04d}" for r, c in zip(frame.row, frame.col)])
    frame.insert(1, "scene", key)
    frame["crs"] = grid.crs.to_string()
    return frame


def tiling_grid(key: str, scene: WindowedRaster, options: dict[str, Any]) -> Grid:
    """The scene's grid in metres at ``resolution``, after checking the scene can give RGB tiles."""
    if scene.count < 3:
        raise ValueError(f"Scene '{key}' has {scene.count} band(s); tiles need at least 3 (R, G, B).")
    if scene.dtypes[0] != "uint8":
        raise ValueError(f"Scene '{key}' is {scene.dtypes[0]}; NAIP-like uint8 imagery is expected.")
    try:
        return scene_grid(scene, options.get("target_crs"), options.get("resolution"))
    except ValueError as error:
        raise ValueError(f"Scene '{key}': {error}") from error


def _label_block(tiles: TileGrid, block: tuple[int, int, int, int], *, scene: WindowedRaster,
                 nlcd: WindowedRaster, lut: np.ndarray, fill: int, n_classes: int) -> pd.DataFrame:
    grid, size = tiles.grid, tiles.tile_size
    row, col, n_rows, n_cols = block
    window = tiles.window(row, col, n_rows, n_cols)
    codes = labels_on_grid(nlcd, grid.crs, window_transform(window, grid.transform),
                           int(window.height), int(window.width), fill=fill)
    counts = tile_value_counts(to_classes(codes, lut, fill), size)
    valid = valid_on_grid(scene, grid, window)
    missing_image = np.zeros(counts.shape[:2] + (2,), np.int64) if valid.all() else tile_value_counts(~valid, size, 2)
    winner, purity = plurality(counts, n_classes)
    rows, cols = np.meshgrid(np.arange(row, row + n_rows), np.arange(col, col + n_cols), indexing="ij")
    frame = pd.DataFrame({
        "row": rows.ravel(),
        "col": cols.ravel(),
        "class_index": winner.ravel(),
        "class_pixels": np.take_along_axis(counts, winner[..., None], -1).ravel(),
        "purity": purity.ravel(),
        "dropped_pixels": counts[..., DROPPED].ravel(),
        "unlabelled_pixels": counts[..., NO_LABEL].ravel(),
        "nodata_pixels": missing_image[..., 1].ravel(),
    })
    frame["row_off"], frame["col_off"] = frame.row * size, frame.col * size
    frame["width"] = frame["height"] = size
    t = grid.transform
    xs = (t.c + t.a * frame.col_off, t.c + t.a * (frame.col_off + size))
    ys = (t.f + t.e * frame.row_off, t.f + t.e * (frame.row_off + size))
    frame["minx"], frame["maxx"] = np.minimum(*xs), np.maximum(*xs)
    frame["miny"], frame["maxy"] = np.minimum(*ys), np.maximum(*ys)
    return frame


def _reject_reasons(frame: pd.DataFrame, min_purity: float) -> np.ndarray:
    """First failed check per tile, in order of severity; None for a usable tile."""
    conditions = [
        frame.nodata_pixels > 0,
        frame.unlabelled_pixels > 0,
        frame.dropped_pixels >= frame.purity * frame.width * frame.height,
        frame.purity < min_purity,
    ]
    reasons = np.select(conditions, list(REJECT_REASONS), "")
    return np.where(reasons == "", None, reasons)


def tile_image(scene: WindowedRaster, grid: Grid, window: Window) -> Image.Image:
    """Bands 1-3 (R, G, B) of one tile window as an RGB image."""
    return Image.fromarray(np.ascontiguousarray(read_on_grid(scene, grid, window).transpose(1, 2, 0)), "RGB")


def tile_image_with_progress(index: int, total: int, scene: WindowedRaster, grid: Grid, window: Window) -> Image.Image:
    """``tile_image`` that logs every PROGRESS_EVERY tiles: PartitionedDataset saves in key order, so ``index``
    counts the tiles written so far and a user sees a long write is alive."""
    if index % PROGRESS_EVERY == 0 or index == total:
        logger.info("Writing tile %d of %d", index, total)
    return tile_image(scene, grid, window)
