"""The windowed copy of a NAIP mosaic: :class:`NaipMosaic` reads its quads over range requests,
warps them onto the mosaic's grid and hands the result over strip by strip, so a scene is never
whole in memory. Which quads and which grid is :mod:`.mosaic`'s to decide.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy
from landuse_kedro.pipelines.acquire.tokens import href_signer
from landuse_kedro.raster import window_bounds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NaipMosaic:
    """Quarter quads warped onto one grid and copied window by window (GeoTiffDataset saves it as
    a :class:`~landuse_kedro.datasets.geotiff.StreamedRaster`): never a whole scene in memory.
    Where quads overlap, the first (by item id) wins."""

    hrefs: tuple[str, ...] = field(repr=False)  # an API may hand out hrefs with tokens
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    descriptions: tuple[str | None, ...] | None
    nodata: float | None = None
    sign: str | None = None
    resampling: str = "nearest"
    block_rows: int = 1024
    colormap: dict[int, tuple[int, ...]] | None = None
    categories: tuple[str, ...] | None = None
    tags: dict[str, str] | None = field(default=None)
    ids: tuple[str, ...] = ()  # the items' ids, to name a quad that fails
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # each quad's bounds in ``crs``
    policy: HrefPolicy = field(default_factory=HrefPolicy)

    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]:
        """Row strips of the grid, in order (each quad's blocks are fetched once per strip). A quad
        is open only while the strips cross it, so open files stay as few as one strip's quads."""
        signer = href_signer(self.sign)
        started, gaps = time.perf_counter(), 0
        bands = list(range(1, self.count + 1))
        opened: dict[int, tuple[ExitStack, Any, bool]] = {}
        with self.policy.env(), ExitStack() as closing:
            closing.callback(lambda: [stack.close() for stack, _, _ in opened.values()])
            for row in range(0, self.height, self.block_rows):
                window = Window(0, row, self.width, min(self.block_rows, self.height - row))
                west, south, east, north = window_bounds(self.transform, window)
                out = np.full((self.count, int(window.height), self.width), self.nodata or 0, self.dtype)
                filled = np.zeros(out.shape[1:], bool)
                for index, (left, bottom, right, top) in enumerate(self.boxes):
                    if bottom >= north:  # above this strip, so above every later one: done with it
                        if index in opened:
                            opened.pop(index)[0].close()
                        continue
                    if left >= east or right <= west or top <= south:
                        continue
                    if index not in opened:
                        opened[index] = self._open(index, signer)
                    _, view, alpha = opened[index]
                    # only the strip's columns under this quad
                    col0 = max(0, math.floor((left - self.transform.c) / self.transform.a))
                    col1 = min(self.width, math.ceil((right - self.transform.c) / self.transform.a))
                    part = Window(col0, row, col1 - col0, window.height)
                    with self.policy.reading(self.hrefs[index], self._what(index)):
                        # the added alpha band marks the quad's footprint (dataset_mask ignores it on a
                        # WarpedVRT)
                        valid = (
                            view.read(view.count, window=part) if alpha else view.dataset_mask(window=part)
                        )
                        take = (valid > 0) & ~filled[:, col0:col1]
                        if take.any():
                            out[:, :, col0:col1][:, take] = view.read(bands, window=part)[:, take]
                            filled[:, col0:col1] |= take
                gaps += int((~filled).sum())
                yield window, out
        logger.info(
            "Mosaicked %d quad(s) onto %d x %d px in %.1f s",
            len(self.hrefs),
            self.width,
            self.height,
            time.perf_counter() - started,
        )
        if gaps:
            logger.info("%d px of the mosaic lie between quads: nodata (%s)", gaps, self.nodata)

    def _what(self, index: int) -> str:
        return f"NAIP item {self.ids[index]}" if index < len(self.ids) else "the NAIP quad"

    def _open(self, index: int, signer: Callable[[str], str]) -> tuple[ExitStack, Any, bool]:
        """The quad through the trust policy, warped onto the grid; the stack closes both."""
        href, what = self.hrefs[index], self._what(index)
        stack = ExitStack()
        try:
            source = stack.enter_context(self.policy.open(href, signer, what))
            with self.policy.reading(href, what):
                alpha = source.nodata is None and not _has_mask(source)
                view = stack.enter_context(
                    WarpedVRT(
                        source,
                        crs=self.crs,
                        transform=self.transform,
                        width=self.width,
                        height=self.height,
                        resampling=Resampling[self.resampling],
                        add_alpha=alpha,
                    )
                )
        except BaseException:
            stack.close()
            raise
        return stack, view, alpha


def _has_mask(source: Any) -> bool:
    """An alpha band or internal mask already tells GDAL where the quad has data."""
    return any(MaskFlags.alpha in flags or MaskFlags.per_dataset in flags for flags in source.mask_flag_enums)
