"""Pure raster helpers shared by the pipelines: an in-memory raster to save, the grid tiles are cut
on, label reprojection onto that grid, the tile grid, and per-tile class counts (the classes
themselves and the NLCD -> class table are ``classes.LandCover``'s).

Everything here works on arrays and on sources with windowed reads (``datasets.geotiff.RasterSource``),
never on paths, so nodes stay pure and a scene larger than memory is processed window by window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from landuse_kedro.classes import NO_LABEL


@dataclass(frozen=True)
class GeoRaster:
    """An in-memory raster to save: ``array`` is (bands, rows, cols); ``colormap`` applies to band 1
    (GeoTIFF palettes exist only there), as ``{value: (r, g, b[, a])}``; ``categories`` names band
    1's values 0, 1, ... (saved beside the GeoTIFF for GDAL and QGIS); ``tags`` are dataset metadata."""

    array: np.ndarray
    crs: Any
    transform: Affine
    nodata: float | int | None = None
    colormap: dict[int, tuple[int, ...]] | None = None
    descriptions: tuple[str | None, ...] | None = None
    categories: tuple[str, ...] | None = None
    tags: dict[str, str] | None = None  # GeoTIFF metadata (``gdalinfo`` lists it)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"GeoRaster array must be (bands, rows, cols), got shape {self.array.shape}.")
        if self.descriptions is not None and len(self.descriptions) != self.array.shape[0]:
            raise ValueError(f"{len(self.descriptions)} band descriptions for {self.array.shape[0]} bands.")
        if self.colormap and (self.array.shape[0] != 1 or self.array.dtype not in (np.uint8, np.uint16)):
            raise ValueError("A GeoTIFF palette needs a single uint8/uint16 band; GDAL drops it otherwise.")
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))

    @property
    def count(self) -> int:
        return self.array.shape[0]

    @property
    def height(self) -> int:
        return self.array.shape[1]

    @property
    def width(self) -> int:
        return self.array.shape[2]


class WindowedRaster(Protocol):
    """What the helpers need from a raster; ``datasets.geotiff.RasterSource`` is one."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    nodata: float | None

    def read(self, window: Any = None, indexes: Any = None, **kwargs: Any) -> np.ndarray: ...

    def open(self) -> Any: ...


# ------------------------------------------------------------------ the grid tiles are cut on


def require_crs(crs: CRS | None, what: str) -> None:
    """A raster without a CRS cannot be placed on the map, nor reprojected: say how to fix it."""
    if crs is None:
        raise ValueError(
            f"{what} has no CRS: cannot place it on the map (nor reproject it with "
            "`tiling.target_crs`): give the file its CRS, e.g. `gdal_edit.py -a_srs EPSG:26919 FILE`."
        )


def require_metric(crs: CRS | None, what: str) -> None:
    """Tile sizes are pixels meant as metres: a CRS in degrees (or feet) would give tiles of a
    meaningless size, so refuse it and say how to fix it."""
    require_crs(crs, what)
    if not crs.is_projected or crs.linear_units_factor[1] != 1.0:
        units = crs.linear_units_factor[0] if crs.is_projected else "degrees"
        raise ValueError(
            f"{what} is in {crs.to_string()} ({units}), not a projected CRS in metres: set "
            "`tiling.target_crs` (e.g. the scene's UTM zone) to reproject it."
        )


@dataclass(frozen=True)
class Grid:
    """A pixel grid on the map: a scene's own, or a reprojection/resampling of it."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(self.transform, Window(0, 0, self.width, self.height))


def window_bounds(transform: Affine, window: Window) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a pixel window."""
    west, south, east, north = array_bounds(
        int(window.height), int(window.width), transform @ Affine.translation(window.col_off, window.row_off)
    )
    return min(west, east), min(south, north), max(west, east), max(south, north)


def scene_grid(source: WindowedRaster, target_crs: Any = None, resolution: float | None = None) -> Grid:
    """The grid to tile ``source`` on: its own when it is already metric at ``resolution``,
    else a warp to ``target_crs`` (default: its own CRS) at ``resolution`` metres."""
    require_crs(source.crs, "The scene")
    crs = CRS.from_user_input(target_crs) if target_crs else source.crs
    require_metric(crs, "The tiling grid" if target_crs else "The scene")
    native_res = (abs(source.transform.a), abs(source.transform.e))
    same_res = resolution is None or all(math.isclose(r, resolution, rel_tol=1e-3) for r in native_res)
    if crs == source.crs and same_res and source.transform.b == 0 == source.transform.d:
        return Grid(source.crs, source.transform, source.width, source.height)
    transform, width, height = calculate_default_transform(
        source.crs, crs, source.width, source.height, *_source_bounds(source), resolution=resolution
    )
    return Grid(crs, transform, width, height)


def is_native(source: WindowedRaster, grid: Grid) -> bool:
    return (
        grid.crs == source.crs
        and grid.transform == source.transform
        and (grid.width, grid.height) == (source.width, source.height)
    )


@contextmanager
def open_on_grid(source: WindowedRaster, grid: Grid) -> Iterator[Any]:
    """A rasterio handle whose pixels are on ``grid``: the file itself, or a warped view of it
    (bilinear; outside the scene is masked) that reads only what each window needs."""
    with source.open() as dataset:
        if is_native(source, grid):
            yield dataset
            return
        with WarpedVRT(
            dataset,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.bilinear,
            add_alpha=dataset.nodata is None,
        ) as warped:
            yield warped


def image_fill(source: WindowedRaster, fill: int | None) -> int | None:
    """The value that marks pixels without image data (when every band holds it) in a scene that
    declares neither nodata nor a mask: NAIP quarter quads and mosaics of them carry black fill
    and GDAL's mask calls it valid. None when the scene says it itself (nodata, alpha, a mask:
    GDAL's dataset mask is the rule then) or when ``fill`` is None (``tiling.image_fill: null``)."""
    if fill is None or source.nodata is not None:
        return None
    if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
        raise ValueError(f"tiling.image_fill must be a uint8 value (0-255) or null, got {fill!r}.")
    with source.open() as dataset:
        declared = any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums)
    return None if declared else fill


def fill_pixels(pixels: np.ndarray, fill: int) -> np.ndarray:
    """True where every band of ``pixels`` (bands, rows, cols) holds ``fill``."""
    found = pixels[0] == fill
    for band in pixels[1:]:
        found &= band == fill
    return found


def read_on_grid(
    source: WindowedRaster, grid: Grid, window: Window, indexes: Sequence[int] = (1, 2, 3)
) -> np.ndarray:
    """Pixels of ``window`` of ``grid``: (len(indexes), rows, cols)."""
    with open_on_grid(source, grid) as dataset:
        return dataset.read(list(indexes), window=window)


def has_data(dataset: Any, window: Window) -> np.ndarray:
    """True where an open dataset has image data in ``window``: its per-dataset mask (alpha, an
    internal mask, a warped view's footprint), else any band off its nodata, GDAL's rule.
    Not rasterio's ``dataset_mask``, which takes a 4-band RGB's 4th band (NAIP's near infrared)
    for alpha, so a declared nodata would mask every pixel whose NIR alone is 0."""
    if MaskFlags.per_dataset in dataset.mask_flag_enums[0]:
        return dataset.read_masks(1, window=window) > 0
    return dataset.read_masks(window=window).any(axis=0)


@dataclass(frozen=True)
class RasterLimits:
    """What a raster's header may claim before planning refuses it (``params:tiling.limits``): a
    damaged or hostile header (a few KB claiming 2^20 x 2^20 px) must fail in seconds, before Spark,
    not plan millions of tasks. The defaults admit a state-wide NAIP mosaic (Massachusetts at 0.6 m,
    500k x 333k px; at 1 m, 1.2 M tiles)."""

    max_pixels: int = 200_000_000_000
    max_tiles: int = 4_000_000
    max_block_pixels: int = 67_108_864

    @classmethod
    def from_params(cls, tiling: dict[str, Any]) -> RasterLimits:
        return cls(**{key: int(value) for key, value in (tiling.get("limits") or {}).items()})

    def check(self, source: WindowedRaster, what: str) -> None:
        """Refuse ``source`` when its declared size or an internal block passes the limits (GDAL
        decodes a whole block, or strip, to read any pixel of it)."""
        pixels = int(source.width) * int(source.height)
        if pixels > self.max_pixels:
            raise ValueError(
                f"{what} declares {source.width} x {source.height} px ({pixels:.3g}), more than "
                f"tiling.limits.max_pixels = {self.max_pixels:.3g}: refused before planning (a damaged "
                "header, or raise the limit)."
            )
        for rows, cols in getattr(source, "block_shapes", None) or ():
            if int(rows) * int(cols) > self.max_block_pixels:
                raise ValueError(
                    f"{what} has {cols} x {rows} px internal blocks, more than "
                    f"tiling.limits.max_block_pixels = {self.max_block_pixels}: reading one pixel "
                    "decodes a whole block. Rewrite it tiled (e.g. `gdal_translate -co TILED=YES`)."
                )

    def check_tiles(self, tiles: int, what: str) -> None:
        if tiles > self.max_tiles:
            raise ValueError(
                f"{what} has {tiles} tiles, more than tiling.limits.max_tiles = {self.max_tiles} "
                "(the driver holds a row per tile): split it, or raise the limit."
            )


# ------------------------------------------------------------------ labels on an image grid


def labels_on_grid(
    label_source: WindowedRaster,
    dst_crs: Any,
    dst_transform: Affine,
    height: int,
    width: int,
    *,
    fill: int | None = None,
    margin: int = 2,
) -> np.ndarray:
    """The label raster's codes resampled (nearest neighbour) onto a (height, width) grid window.

    Reads only the label window covering the destination, plus ``margin`` label pixels, so a
    scene larger than memory works when called block by block. Pixels outside the label raster
    (or on its nodata) get ``fill``: the label nodata, else 0.
    """
    fill = label_fill(label_source) if fill is None else fill
    destination = np.full((height, width), fill, dtype=label_source_dtype(label_source))
    dst_crs = CRS.from_user_input(dst_crs)
    box = window_bounds(dst_transform, Window(0, 0, width, height))
    window = covering_window(
        label_source, transform_bounds(dst_crs, label_source.crs, *box, densify_pts=21), margin
    )
    if window is None:
        return destination
    reproject(
        source=label_source.read(window=window, indexes=1),
        destination=destination,
        src_transform=label_source.transform @ Affine.translation(window.col_off, window.row_off),
        src_crs=label_source.crs,
        src_nodata=label_source.nodata,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        dst_nodata=fill,
        resampling=Resampling.nearest,
    )
    return destination


def label_fill(label_source: WindowedRaster) -> int:
    return 0 if label_source.nodata is None else int(label_source.nodata)


def label_source_dtype(label_source: WindowedRaster) -> np.dtype:
    dtypes = getattr(label_source, "dtypes", None)
    return np.dtype(dtypes[0]) if dtypes else np.dtype(np.uint8)


def code_counts(source: WindowedRaster, window: Window, chunk: int = 2048) -> np.ndarray:
    """Pixels of each uint8 code (256 bins) of band 1 in ``window``, read ``chunk`` x ``chunk`` at a
    time: memory is one chunk whatever the window."""
    counts = np.zeros(256, dtype=np.int64)
    with source.open() as dataset:
        for row in range(int(window.row_off), int(window.row_off + window.height), chunk):
            for col in range(int(window.col_off), int(window.col_off + window.width), chunk):
                part = Window(
                    col,
                    row,
                    min(chunk, int(window.col_off + window.width) - col),
                    min(chunk, int(window.row_off + window.height) - row),
                )
                counts += np.bincount(dataset.read(1, window=part).ravel(), minlength=256)
    return counts


def overlaps(source: WindowedRaster, other: WindowedRaster) -> bool:
    """Whether two rasters share any ground (compared in ``other``'s CRS)."""
    return (
        covering_window(
            other, transform_bounds(source.crs, other.crs, *_source_bounds(source), densify_pts=21), 0
        )
        is not None
    )


def covering_window(source: WindowedRaster, box: Sequence[float], margin: int) -> Window | None:
    """Integer window of ``source`` covering ``box`` plus ``margin`` pixels, clipped to the raster;
    None when they do not intersect."""
    window = from_bounds(*box, transform=source.transform)
    row0 = max(math.floor(window.row_off) - margin, 0)
    col0 = max(math.floor(window.col_off) - margin, 0)
    row1 = min(math.ceil(window.row_off + window.height) + margin, source.height)
    col1 = min(math.ceil(window.col_off + window.width) + margin, source.width)
    if row1 <= row0 or col1 <= col0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _source_bounds(source: WindowedRaster) -> tuple[float, float, float, float]:
    return window_bounds(source.transform, Window(0, 0, source.width, source.height))


# ------------------------------------------------------------------ tile grid


@dataclass(frozen=True)
class TileGrid:
    """Full ``tile_size`` tiles on a regular grid from a grid's top-left corner; the partial
    tiles at the right and bottom edges are left out."""

    grid: Grid
    tile_size: int

    @property
    def n_rows(self) -> int:
        return self.grid.height // self.tile_size

    @property
    def n_cols(self) -> int:
        return self.grid.width // self.tile_size

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def window(self, row: int, col: int, n_rows: int = 1, n_cols: int = 1) -> Window:
        size = self.tile_size
        return Window(col * size, row * size, n_cols * size, n_rows * size)

    def cells(self) -> Iterator[tuple[int, int]]:
        """(row, col) of every tile, row-major."""
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield row, col

    def blocks(self, block_tiles: int) -> Iterator[tuple[int, int, int, int]]:
        """(row, col, n_rows, n_cols) of blocks of up to ``block_tiles`` x ``block_tiles`` tiles:
        the unit read at once, so memory depends on the block, not on the scene."""
        for row in range(0, self.n_rows, block_tiles):
            for col in range(0, self.n_cols, block_tiles):
                yield row, col, min(block_tiles, self.n_rows - row), min(block_tiles, self.n_cols - col)


# ------------------------------------------------------------------ class values per pixel and per tile


def to_classes(codes: np.ndarray, lut: np.ndarray, nodata: int | None = None) -> np.ndarray:
    """Class index per pixel; ``nodata`` codes become ``NO_LABEL``."""
    if codes.dtype != np.uint8:
        raise ValueError(f"Label codes must be uint8 (NLCD), got {codes.dtype}.")
    classes = lut[codes]
    if nodata is not None:
        classes[codes == nodata] = NO_LABEL
    return classes


def tile_value_counts(values: np.ndarray, tile_size: int, n_values: int = 256) -> np.ndarray:
    """(tile rows, tile cols, n_values) pixel counts of each value in each tile of a block whose
    sides are multiples of ``tile_size``."""
    rows, cols = values.shape[0] // tile_size, values.shape[1] // tile_size
    values = values[: rows * tile_size, : cols * tile_size]
    # one bincount over (tile index, value) keys: no per-tile loop, no transposed copy
    row_keys = (np.arange(rows * tile_size) // tile_size) * (cols * n_values)
    col_keys = (np.arange(cols * tile_size) // tile_size) * n_values
    keys = row_keys[:, None] + col_keys[None, :] + values
    counts = np.bincount(keys.ravel(), minlength=rows * cols * n_values)
    return counts.reshape(rows, cols, n_values)


def plurality(counts: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent class among the first ``n_classes`` values and its share of ALL pixels
    (dropped and unlabelled pixels count against the share). Ties go to the lower class index."""
    class_counts = counts[..., :n_classes]
    winner = class_counts.argmax(axis=-1)
    total = np.maximum(counts.sum(axis=-1), 1)
    return winner, np.take_along_axis(class_counts, winner[..., None], axis=-1)[..., 0] / total
