"""The ``mosaic_naip`` node: which of a region-year's quads are used and the one grid they are
copied onto, from their headers only (the pixels are copied by :class:`.mosaic_stream.NaipMosaic`
when the catalog saves the scene).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from landuse_kedro.parameters import as_list
from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy
from landuse_kedro.pipelines.acquire.mosaic_stream import NaipMosaic
from landuse_kedro.pipelines.acquire.regions import LONLAT, region_bbox
from landuse_kedro.pipelines.acquire.tokens import href_signer, public_href

logger = logging.getLogger(__name__)


def mosaic_naip(
    naip_items: dict[str, list[dict[str, Any]]], acquire: dict[str, Any]
) -> tuple[dict[str, NaipMosaic], dict[str, list[dict[str, Any]]]]:
    """Put each region-year's quarter quads on one grid, so ``naip_scenes`` gets one scene per region and
    year: the quads' most common CRS (or ``acquire.crs``), their most common resolution (or
    ``acquire.resolution``: real NAIP mixes 0.3, 0.6 and 1 m, and one item must not size the grid),
    aligned on the first quad's pixels, over the region's box clipped to the quads (no empty margins).
    Only headers are read here, each href through the trust policy (:mod:`.hrefs`); pixels are copied
    when the catalog saves.

    Args:
        naip_items: ``naip_items`` from :func:`.stac.search_naip`.
        acquire: ``params:acquire`` (``regions``, ``sign``, ``crs``, ``resolution``, ``item_resolution``,
            ``max_item_pixels``, ``max_pixels``, ``nodata``, ``resampling``, ``block_rows``, ``trust``,
            ``timeout_s``, ``retries``).

    Returns:
        ``naip_scenes``: ``<region>_<year>`` -> a :class:`NaipMosaic`, streamed window by window; and
        ``naip_refused``: ``<region>_<year>`` -> the items left out (id, href without token, reason):
        outside the box or year (from the search), or a resolution or size outside the limits.

    Raises:
        ValueError: ``acquire.sign`` is not null or ``planetary_computer``, the quads of a region-year
            differ in bands or data type, or the mosaic would pass ``acquire.max_pixels``.
        HrefRefused: An href outside the trust policy, or not a GeoTIFF (a ValueError, naming the item).
        ImportError: ``acquire.sign`` is ``planetary_computer`` but that package is not installed.
        ConnectionError: A quad cannot be read (named without its token), or its host does not answer
            within ``acquire.timeout_s`` (and ``retries``).
        LookupError: No item is usable, or the items do not overlap the region's box.
    """
    signer = href_signer(acquire.get("sign"))
    policy = HrefPolicy.from_params(acquire)
    mosaics, refused = {}, {}
    with policy.env():
        for key, found in sorted(naip_items.items()):
            refused[key] = [_refusal(item, item["refused"]) for item in found if item.get("refused")]
            items = [item for item in found if not item.get("refused")]
            headers = []
            for item in items:
                with policy.open(item["href"], signer, f"NAIP item {item['id']}") as source:
                    headers.append(
                        (
                            source.crs,
                            source.transform,
                            source.bounds,
                            source.count,
                            source.dtypes[0],
                            source.descriptions,
                            source.nodata,
                            source.width * source.height,
                        )
                    )
            items, headers = _within_limits(key, items, headers, acquire, refused[key])
            region = key.rsplit("_", 1)[0]
            mosaics[key] = _mosaic_grid(
                key, items, headers, region_bbox(acquire["regions"][region], region), acquire, policy
            )
    return mosaics, refused


def _refusal(item: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {"id": item["id"], "href": public_href(item["href"]), "reason": reason}


def _within_limits(
    key: str, items: list[dict], headers: list[tuple], acquire: Mapping[str, Any], refused: list[dict]
) -> tuple[list[dict], list[tuple]]:
    """The items whose resolution is within ``acquire.item_resolution`` and size within
    ``acquire.max_item_pixels``; the others are logged and added to ``refused``."""
    low, high = (float(v) for v in as_list(acquire.get("item_resolution")) or (0.1, 5.0))
    max_item_pixels = float(acquire.get("max_item_pixels") or 1e9)
    kept = []
    for item, header in zip(items, headers, strict=True):
        res = (abs(header[1].a), abs(header[1].e))
        if not all(low <= r <= high for r in res):
            reason = (
                f"its resolution {res[0]:g} x {res[1]:g} is outside acquire.item_resolution "
                f"[{low:g}, {high:g}]"
            )
        elif header[7] > max_item_pixels:
            reason = f"its {header[7]:.3g} px pass acquire.max_item_pixels ({max_item_pixels:.3g})"
        else:
            kept.append((item, header))
            continue
        logger.warning("NAIP %s: item %s refused: %s", key, item["id"], reason)
        refused.append(_refusal(item, reason))
    if not kept:
        raise LookupError(f"NAIP {key}: no usable item ({len(refused)} refused: {refused}).")
    return [item for item, _ in kept], [header for _, header in kept]


def _mosaic_grid(
    key: str,
    items: list[dict[str, Any]],
    headers: list[tuple],
    bbox: list[float],
    acquire: Mapping[str, Any],
    policy: HrefPolicy,
) -> NaipMosaic:
    crs = (
        CRS.from_user_input(acquire["crs"])
        if acquire.get("crs")
        else Counter(h[0] for h in headers).most_common(1)[0][0]
    )
    resolution = acquire.get("resolution") or _modal_resolution(headers)
    counts = {(h[3], h[4]) for h in headers}
    if len(counts) != 1:
        raise ValueError(
            f"NAIP {key}: the quads differ in bands or type {sorted(counts)}; cannot mosaic them."
        )
    ((count, dtype),) = counts
    # anchor: the first quad's pixel corner in the target CRS, so a same-CRS mosaic copies pixels exactly
    first = headers[0]
    if first[0] == crs:
        anchor_x, anchor_y = first[1].c, first[1].f
    else:
        anchor_x, anchor_y = transform_bounds(first[0], crs, *first[2], densify_pts=21)[0::3]
    quads = [transform_bounds(h[0], crs, *h[2], densify_pts=21) for h in headers]
    box = transform_bounds(LONLAT, crs, *bbox, densify_pts=21)
    west = max(box[0], min(q[0] for q in quads))
    south = max(box[1], min(q[1] for q in quads))
    east = min(box[2], max(q[2] for q in quads))
    north = min(box[3], max(q[3] for q in quads))
    if east <= west or north <= south:
        raise LookupError(f"NAIP {key}: the items found do not overlap the box {bbox}.")
    west = anchor_x + math.floor((west - anchor_x) / resolution) * resolution
    north = anchor_y + math.ceil((north - anchor_y) / resolution) * resolution
    width = math.ceil((east - west) / resolution - 1e-6)
    height = math.ceil((north - south) / resolution - 1e-6)
    max_pixels = float(acquire.get("max_pixels") or 1e10)
    if width * height > max_pixels:
        raise ValueError(
            f"NAIP {key}: the mosaic would be {width} x {height} px ({width * height:.3g}) at {resolution:g} "
            f"per pixel, more than acquire.max_pixels ({max_pixels:.3g}); nothing was written. Split the "
            "region into smaller boxes, set a coarser acquire.resolution, or raise acquire.max_pixels."
        )
    return NaipMosaic(
        hrefs=tuple(item["href"] for item in items),
        crs=crs,
        transform=Affine(resolution, 0, west, 0, -resolution, north),
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        descriptions=first[5],
        sign=acquire.get("sign"),
        # NAIP declares no nodata and fills around each quad's footprint with 0: the mosaic declares
        # the fill it writes (the gaps between quads too), so every reader sees no image data there
        nodata=next((v for v in (acquire.get("nodata"), first[6]) if v is not None), 0),
        resampling=acquire.get("resampling", "nearest"),
        block_rows=int(acquire.get("block_rows", 1024)),
        tags={"NAIP_ITEMS": ",".join(item["id"] for item in items)},
        ids=tuple(item["id"] for item in items),
        boxes=tuple(tuple(q) for q in quads),
        policy=policy,
    )


def _modal_resolution(headers: list[tuple]) -> float:
    """The quads' most common pixel size (to the millimetre; a tie goes to the finer)."""
    sizes = [min(abs(h[1].a), abs(h[1].e)) for h in headers]
    votes = Counter(round(size, 3) for size in sizes)
    best = max(votes.values())
    mode = min(size for size, n in votes.items() if n == best)
    return next(size for size in sizes if round(size, 3) == mode)
