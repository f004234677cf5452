"""The ``read_nlcd`` node: each NLCD edition cut to the regions by windowed reads of its remote COG
(:class:`_NlcdWindows`, called when the catalog saves), never read whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy
from landuse_kedro.pipelines.acquire.regions import LONLAT, region_bbox
from landuse_kedro.pipelines.acquire.stac import nlcd_href
from landuse_kedro.pipelines.acquire.tokens import href_signer, public_href
from landuse_kedro.raster import GeoRaster, covering_window
from landuse_kedro.scene_keys import key_of_url, nlcd_key

logger = logging.getLogger(__name__)


def read_nlcd(acquire: dict[str, Any], nlcd_present: FileIndex) -> dict[str, Callable[[], GeoRaster]]:
    """Cut each NLCD edition to the regions without reading it whole: per region only the window over its
    box plus ``nlcd.margin`` metres is read (range requests on the COG), and the windows are placed on
    one grid (nodata elsewhere). Editions already in ``nlcd_rasters`` are skipped.

    Args:
        acquire: ``params:acquire`` (``nlcd.editions``, ``nlcd.margin``, ``regions``, ``sign``;
            ``stac_url`` for editions named by STAC item).
        nlcd_present: ``nlcd_present``, the rasters already in ``01_raw/nlcd``.

    Returns:
        ``nlcd_rasters``: ``nlcd_<year>`` -> a loader that reads the windows when the catalog saves the
        partition.

    Raises:
        ValueError: ``acquire.nlcd.editions`` is empty, an edition names neither ``href`` nor
            ``collection`` + ``item``, or a region's box is malformed.
        ConnectionError: The STAC API, asked for an edition's item, is unreachable.
        LookupError: An edition's STAC item or asset does not exist.
    """
    nlcd = acquire.get("nlcd") or {}
    editions = nlcd.get("editions") or {}
    if not editions:
        raise ValueError(
            "acquire.nlcd.editions is empty: name each NLCD edition's COG, e.g. "
            "{2016: {href: https://.../nlcd_2016.tif}} or {2016: {collection: ..., item: ..., asset: ...}}."
        )
    present = {key_of_url(url) for url in nlcd_present.urls}
    boxes = [region_bbox(box, name) for name, box in sorted((acquire.get("regions") or {}).items())]
    policy = HrefPolicy.from_params(acquire)
    loaders = {}
    for year, source in sorted(editions.items()):
        key = nlcd_key(year)
        if key in present:
            logger.info("NLCD %s is already in nlcd_rasters: not fetched again", key)
            continue
        href = nlcd_href(source, acquire, policy)
        policy.check(href, f"NLCD edition {year}")
        loaders[key] = _NlcdWindows(
            href, tuple(map(tuple, boxes)), float(nlcd.get("margin", 1000)), acquire.get("sign"), policy
        )
    return loaders


@dataclass(frozen=True)
class _NlcdWindows:
    """Called when the catalog saves the partition: reads the windows, returns one GeoRaster."""

    href: str
    boxes: tuple[tuple[float, ...], ...]
    margin: float
    sign: str | None
    policy: HrefPolicy = field(default_factory=HrefPolicy)

    def __call__(self) -> GeoRaster:
        started = time.perf_counter()
        with self.policy.env():
            with self.policy.open(self.href, href_signer(self.sign), "the NLCD COG") as source:
                windows = [self._window(source, box) for box in self.boxes]
                windows = [w for w in windows if w is not None]
                if not windows:
                    raise LookupError(
                        f"The NLCD COG {public_href(self.href)} does not cover any region's box."
                    )
                row0, col0 = min(w.row_off for w in windows), min(w.col_off for w in windows)
                row1 = max(w.row_off + w.height for w in windows)
                col1 = max(w.col_off + w.width for w in windows)
                fill = 0 if source.nodata is None else source.nodata
                out = np.full((1, row1 - row0, col1 - col0), fill, source.dtypes[0])
                for w in windows:
                    out[
                        0,
                        w.row_off - row0 : w.row_off - row0 + w.height,
                        w.col_off - col0 : w.col_off - col0 + w.width,
                    ] = source.read(1, window=w)
                try:
                    colormap = source.colormap(1)
                except ValueError:
                    colormap = None
                raster = GeoRaster(
                    out,
                    source.crs,
                    source.transform * Affine.translation(col0, row0),
                    nodata=source.nodata,
                    colormap=colormap,
                    tags={"SOURCE": public_href(self.href)},
                )
        logger.info(
            "NLCD: %d window(s), %d x %d px, from %s in %.1f s",
            len(windows),
            out.shape[2],
            out.shape[1],
            public_href(self.href),
            time.perf_counter() - started,
        )
        return raster

    def _window(self, source: Any, box: tuple[float, ...]) -> Window | None:
        west, south, east, north = transform_bounds(LONLAT, source.crs, *box, densify_pts=21)
        m = self.margin  # in map units, so it widens the box; covering_window's margin is in pixels
        return covering_window(source, (west - m, south - m, east + m, north + m), 0)
