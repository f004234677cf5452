"""Cutting scenes into labelled tiles, window by window: the one tiling used by data_preparation
(training tiles) and development_inference (every tile of a region), so both see the same grid,
reprojection and labels.

The unit of work is a *block* of tile windows of one scene. The driver only plans (scene headers,
grids, blocks); a Spark task opens its scene (or its warped view) and the NLCD raster once, reads
its blocks in row-major order (GDAL's block cache is reused), and returns per-tile rows. Pixels
never travel through the driver or the JVM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from rasterio.warp import transform_bounds
from rasterio.windows import transform as window_transform

from landuse_kedro.classes import DROPPED, NO_LABEL, UNKNOWN, unknown_codes
from landuse_kedro.failures import error_chain
from landuse_kedro.raster import (
    Grid,
    RasterLimits,
    TileGrid,
    WindowedRaster,
    code_counts,
    covering_window,
    fill_pixels,
    has_data,
    image_fill,
    label_fill,
    labels_on_grid,
    open_on_grid,
    overlaps,
    plurality,
    require_crs,
    scene_grid,
    tile_value_counts,
    to_classes,
)
from landuse_kedro.storage import redact_environment_secrets, shippable, unreachable_cause

logger = logging.getLogger(__name__)

BLOCK_TILES = 8
"""Tiles per block side read at once: 8 x 224 px = 1,792 px, about 10 MB of RGB."""

Block = tuple[int, int, int, int]
"""(tile row, tile col, tile rows, tile cols) of a scene's tile grid."""
WINDOW_PLACE = {
    "row_off": "bigint",
    "col_off": "bigint",
    "width": "bigint",
    "height": "bigint",
    "minx": "double",
    "miny": "double",
    "maxx": "double",
    "maxy": "double",
}
"""A tile window in its scene (pixel offsets and size) and on the map (bounds in the scene's CRS)."""
LABEL_COLUMNS = {
    "row": "bigint",
    "col": "bigint",
    "class_index": "int",
    "class_pixels": "bigint",
    "label_share": "double",
    "dropped_pixels": "bigint",
    "unlabelled_pixels": "bigint",
    "unknown_pixels": "bigint",
    "nodata_pixels": "bigint",
    **WINDOW_PLACE,
    "read_error": "string",
}
"""What a task returns per tile from its labels (Spark DDL types)."""


def nearest_year(year: int, available: Mapping[int, Any]) -> int:
    """The label year closest to an image year; on a tie the older one (land cover was mapped
    before the change the newer map may already show)."""
    return min(available, key=lambda candidate: (abs(candidate - year), candidate))


# ------------------------------------------------------------------ the plan (driver, headers only)


@dataclass(frozen=True)
class ScenePlan:
    """Everything a task needs to cut and label one scene, and no pixels: small and picklable.

    ``lut`` maps label codes (NLCD) to indices of ``classes``; ``labels`` is the label raster
    paired with the scene (its nearest NLCD edition); ``unknown_codes`` are the (code, pixels) of
    label codes outside the legend under the scene, out of ``label_pixels`` checked when planned;
    ``image_fill``: the value that, in every band, marks no image data in a scene that declares no
    nodata nor mask (``raster.image_fill``).
    """

    key: str
    scene: WindowedRaster
    grid: Grid
    tile_size: int
    labels: WindowedRaster
    lut: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    labels_key: str = ""
    unknown_codes: tuple[tuple[int, int], ...] = ()
    label_pixels: int = 0
    image_fill: int | None = None

    @property
    def tiles(self) -> TileGrid:
        return TileGrid(self.grid, self.tile_size)

    @property
    def url(self) -> str:
        protocol, path = getattr(self.scene, "protocol", "file"), getattr(self.scene, "path", self.key)
        return path if protocol == "file" else f"{protocol}://{path}"

    def tile_id(self, row: int, col: int) -> str:
        return f"{self.key}_r{row:04d}_c{col:04d}"

    def blocks(self, block_tiles: int = BLOCK_TILES) -> list[Block]:
        return list(self.tiles.blocks(block_tiles))

    def shippable(self) -> ScenePlan:
        """This plan for Spark tasks: its rasters without the storage secrets, which executors
        take from their environment (``storage.shippable``)."""
        return replace(self, scene=_without_secrets(self.scene), labels=_without_secrets(self.labels))


def _without_secrets(source: WindowedRaster) -> WindowedRaster:
    options = getattr(source, "storage_options", None)
    return replace(source, storage_options=shippable(options)) if options else source


def plan_scene(
    key: str,
    scene: WindowedRaster,
    labels: WindowedRaster,
    lut: np.ndarray,
    classes: Sequence[str],
    tiling: dict[str, Any],
    labels_key: str = "",
    max_unknown_fraction: float = 0.0,
) -> ScenePlan:
    """Check that ``scene`` can give labelled tiles and fix the grid they are cut on, from headers
    and the label codes under the scene: nothing here grows with a raster's declared pixels.

    Refuses (``ValueError``, before any Spark task) rasters past ``tiling.limits``, label rasters
    that are not uint8 codes with a CRS, and label codes outside the legend (``lut`` ->
    ``UNKNOWN``) on more than ``max_unknown_fraction`` of the label pixels under the scene."""
    limits = RasterLimits.from_params(tiling)
    labels_name = f"NLCD raster '{labels_key}'" if labels_key else "The label raster"
    limits.check(scene, f"Scene '{key}'")
    limits.check(labels, labels_name)
    if labels.crs is None or labels.dtypes[0] != "uint8":
        raise ValueError(
            f"{labels_name} must be uint8 NLCD codes with a CRS, got {labels.dtypes[0]} in {labels.crs}."
        )
    grid = tiling_grid(key, scene, tiling)
    limits.check_tiles(
        (grid.width // int(tiling["tile_size"])) * (grid.height // int(tiling["tile_size"])),
        f"Scene '{key}' ({grid.width} x {grid.height} px on its grid)",
    )
    if not overlaps(scene, labels):
        raise ValueError(
            f"Scene '{key}' (bounds {tuple(round(v) for v in scene.bounds)} in "
            f"{scene.crs.to_string()}) does not overlap the NLCD raster it was paired with "
            f"(bounds {tuple(round(v) for v in labels.bounds)} in {labels.crs.to_string()})."
        )
    checked, unknown = legend_check(scene, labels, lut)
    if sum(unknown.values()) > max_unknown_fraction * checked:
        raise ValueError(
            f"Scene '{key}': {labels_name} has codes outside the legend under the scene: "
            f"{_code_list(unknown)} of its {checked} px ({sum(unknown.values()) / checked:.2%}, above "
            f"land_cover.max_unknown_fraction = {max_unknown_fraction}). The legend is "
            "land_cover.nlcd_to_class + water_codes + nodata_codes: is this NLCD land cover, in its "
            "own codes? Add a product's extra codes there, or raise the fraction."
        )
    if unknown:
        logger.warning(
            "Scene %s: %s has %s outside the legend under the scene (of %d px): tiles on them get no label.",
            key,
            labels_name,
            _code_list(unknown),
            checked,
        )
    plan = ScenePlan(
        key,
        scene,
        grid,
        int(tiling["tile_size"]),
        labels,
        lut,
        tuple(classes),
        labels_key,
        tuple(unknown.items()),
        checked,
        image_fill=image_fill(scene, tiling.get("image_fill", 0)),
    )
    if plan.image_fill is not None:
        logger.info(
            "Scene %s declares no nodata nor mask: pixels %d in every band count as no image data "
            "(tiling.image_fill)",
            key,
            plan.image_fill,
        )
    if len(plan.tiles) == 0:
        raise ValueError(
            f"Scene '{key}' ({grid.width} x {grid.height} px) is smaller than one {plan.tile_size} px tile."
        )
    return plan


def legend_check(
    scene: WindowedRaster, labels: WindowedRaster, lut: np.ndarray
) -> tuple[int, dict[int, int]]:
    """(label pixels under ``scene``, {code: pixels} of those outside the legend): the label raster
    read at its own resolution (NLCD's 30 m: 1/900 of a 1 m scene's pixels), in bounded chunks."""
    box = transform_bounds(scene.crs, labels.crs, *scene.bounds, densify_pts=21)
    window = covering_window(labels, box, 2)
    if window is None:
        return 0, {}
    counts = code_counts(labels, window)
    return int(counts.sum()), unknown_codes(counts, lut, labels.nodata)


def _code_list(unknown: Mapping[int, int]) -> str:
    return ", ".join(f"code {code}: {pixels} px" for code, pixels in sorted(unknown.items()))


def tiling_grid(key: str, scene: WindowedRaster, tiling: dict[str, Any]) -> Grid:
    """The scene's grid in metres at ``resolution``, after checking the scene can give RGB tiles."""
    if scene.count < 3:
        raise ValueError(f"Scene '{key}' has {scene.count} band(s); tiles need at least 3 (R, G, B).")
    if scene.dtypes[0] != "uint8":
        raise ValueError(f"Scene '{key}' is {scene.dtypes[0]}; NAIP-like uint8 imagery is expected.")
    require_crs(scene.crs, f"Scene '{key}'")
    try:
        return scene_grid(scene, tiling.get("target_crs"), tiling.get("resolution"))
    except ValueError as error:
        raise ValueError(f"Scene '{key}': {error}") from error


# ------------------------------------------------------------------ a task's open scene


class OpenScene:
    """A scene (on its grid) and its label raster, opened once for all the blocks of a task."""

    def __init__(self, plan: ScenePlan) -> None:
        self.plan = plan
        self._stack = ExitStack()
        self.image = self._stack.enter_context(open_on_grid(plan.scene, plan.grid))
        self.labels = self._stack.enter_context(plan.labels.open())
        self._fill = label_fill(plan.labels)
        # RGB for the tiles; every band when black fill is looked for (fill is 0 in all of them)
        self._bands = [1, 2, 3] if plan.image_fill is None else list(range(1, plan.scene.count + 1))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> OpenScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_pixels(self, block: Block) -> np.ndarray:
        """The pixels of ``block``'s window that labelling checks: (bands, rows, cols)."""
        return self.image.read(self._bands, window=self.plan.tiles.window(*block))

    def label_block(self, block: Block, pixels: np.ndarray | None = None) -> pd.DataFrame:
        """One row per tile of ``block`` (``LABEL_COLUMNS``): class counts of its labels
        reprojected onto the scene's grid and pixels without image data (GDAL's mask, and the
        plan's ``image_fill``). The pixels are read (or given): a window that cannot be decoded
        fails here, where it is labelled, never later when its tile is written."""
        tiles, size = self.plan.tiles, self.plan.tile_size
        row, col, n_rows, n_cols = block
        window = tiles.window(row, col, n_rows, n_cols)
        pixels = self.read_pixels(block) if pixels is None else pixels
        codes = labels_on_grid(
            self.labels,
            self.plan.grid.crs,
            window_transform(window, self.plan.grid.transform),
            int(window.height),
            int(window.width),
            fill=self._fill,
        )
        counts = tile_value_counts(to_classes(codes, self.plan.lut, self._fill), size)
        valid = has_data(self.image, window)
        if self.plan.image_fill is not None:
            valid &= ~fill_pixels(pixels, self.plan.image_fill)
        missing = (
            np.zeros(counts.shape[:2] + (2,), np.int64) if valid.all() else tile_value_counts(~valid, size, 2)
        )
        winner, share = plurality(counts, len(self.plan.classes))
        frame = _grid_frame(self.plan, block)
        frame["class_index"] = winner.ravel()
        frame["class_pixels"] = np.take_along_axis(counts, winner[..., None], -1).ravel()
        frame["label_share"] = share.ravel()
        frame["dropped_pixels"] = counts[..., DROPPED].ravel()
        frame["unlabelled_pixels"] = counts[..., NO_LABEL].ravel()
        frame["unknown_pixels"] = counts[..., UNKNOWN].ravel()
        frame["nodata_pixels"] = missing[..., 1].ravel()
        frame["read_error"] = None
        return frame[list(LABEL_COLUMNS)]

    def read_block(self, block: Block) -> np.ndarray:
        """RGB of every tile of ``block``, row-major: (tiles, size, size, 3) uint8."""
        return self._tiles_rgb(block, self.image.read([1, 2, 3], window=self.plan.tiles.window(*block)))

    def _tiles_rgb(self, block: Block, pixels: np.ndarray) -> np.ndarray:
        _, _, n_rows, n_cols = block
        size = self.plan.tile_size
        return (
            pixels[:3]
            .reshape(3, n_rows, size, n_cols, size)
            .transpose(1, 3, 2, 4, 0)
            .reshape(n_rows * n_cols, size, size, 3)
        )

    def _labelled(self, block: Block, with_pixels: bool) -> tuple[pd.DataFrame, np.ndarray | None]:
        """Labels of ``block`` and, when asked, its tiles' RGB: the window is read once for both."""
        pixels = self.read_pixels(block)
        return self.label_block(block, pixels), self._tiles_rgb(block, pixels) if with_pixels else None

    def read_tile(self, row: int, col: int) -> np.ndarray:
        return self.read_block((row, col, 1, 1))[0]

    def blocks_or_tiles(
        self, block: Block, *, with_pixels: bool
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray | None]]:
        """Labels (and pixels) of ``block``; when the block cannot be read (a corrupt GeoTIFF
        block, a storage error), tile by tile, so only the unreadable tiles fail: they come back
        as rows with ``read_error`` set, never skipped."""
        try:
            yield self._labelled(block, with_pixels)
            return
        except Exception as error:  # retried per tile below, which reports the reason
            self._fail_if_unreachable(error)  # the storage, not the window: fail the task (and the run) now
        row, col, n_rows, n_cols = block
        for r in range(row, row + n_rows):
            for c in range(col, col + n_cols):
                one = (r, c, 1, 1)
                try:
                    yield self._labelled(one, with_pixels)
                except Exception as error:  # a bad window is a row, not a failed job
                    self._fail_if_unreachable(error)
                    yield self.failed_tile(one, error), None

    def _fail_if_unreachable(self, error: Exception) -> None:
        """Raise when ``error`` says the storage is unreachable (``storage.unreachable_cause``),
        naming the cause that rasterio's "Read failed" hides."""
        cause = unreachable_cause(error)
        if cause is error:
            raise error
        if cause is not None:
            raise ConnectionError(
                redact_environment_secrets(
                    f"Storage unreachable while reading {self.plan.url}: {type(cause).__name__}: {cause}"
                )
            ) from error

    def failed_tile(self, block: Block, error: Exception) -> pd.DataFrame:
        frame = _grid_frame(self.plan, block)
        area = self.plan.tile_size**2
        frame = frame.assign(
            class_index=0,
            class_pixels=0,
            label_share=0.0,
            dropped_pixels=0,
            unlabelled_pixels=area,
            unknown_pixels=0,
            nodata_pixels=area,
        )
        # the window is in the row (row_off, col_off): the reason names only the cause, so failures group
        frame["read_error"] = redact_environment_secrets(
            f"cannot read window of {self.plan.url}: {error_chain(error)}"
        )
        return frame[list(LABEL_COLUMNS)]


def _grid_frame(plan: ScenePlan, block: Block) -> pd.DataFrame:
    row, col, n_rows, n_cols = block
    size = plan.tile_size
    rows, cols = np.meshgrid(np.arange(row, row + n_rows), np.arange(col, col + n_cols), indexing="ij")
    frame = pd.DataFrame({"row": rows.ravel().astype(np.int64), "col": cols.ravel().astype(np.int64)})
    frame["row_off"], frame["col_off"] = frame.row * size, frame.col * size
    frame["width"] = frame["height"] = size
    t = plan.grid.transform
    xs = (t.c + t.a * frame.col_off, t.c + t.a * (frame.col_off + size))
    ys = (t.f + t.e * frame.row_off, t.f + t.e * (frame.row_off + size))
    frame["minx"], frame["maxx"] = np.minimum(*xs), np.maximum(*xs)
    frame["miny"], frame["maxy"] = np.minimum(*ys), np.maximum(*ys)
    return frame


class OpenScenes:
    """The scene a task (or a process) is reading: it stays open while consecutive calls name the
    same plan (rows come grouped by scene, tiles in row order), so each scene opens once."""

    def __init__(self) -> None:
        self._current: OpenScene | None = None

    def __call__(self, plan: ScenePlan) -> OpenScene:
        if self._current is None or self._current.plan is not plan:
            self.close()
            self._current = OpenScene(plan)
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


# ------------------------------------------------------------------ tile tables


def tile_label(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The plurality class of each tile, or None when it has no class pixel, when dropped codes
    (water) outnumber it, or when any of its pixels has a code outside the legend (its label would
    rest on codes nobody mapped)."""
    names = np.asarray(classes, dtype=object)[frame["class_index"].to_numpy()]
    labelled = (frame["class_pixels"] > 0) & (frame["dropped_pixels"] < frame["class_pixels"])
    labelled &= frame["unknown_pixels"] == 0
    return np.where(labelled & frame["read_error"].isna(), names, None)


@dataclass(frozen=True)
class TileWindow:
    """A lazy tile image for ``PartitionedDataset``: reading it reuses the scene that the previous
    tile of the same plan opened, so a task writing tiles in row order opens its scene once."""

    plan: ScenePlan
    row: int
    col: int

    def __call__(self) -> Image.Image:
        return Image.fromarray(_LAST_OPENED(self.plan).read_tile(self.row, self.col), "RGB")


_LAST_OPENED = OpenScenes()
"""Per process (a Spark Python worker, or the driver): the scene the last TileWindow read."""
