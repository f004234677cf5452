"""acquire: NAIP scenes and NLCD windows from a STAC API and cloud-optimised GeoTIFFs.

Nodes take parameters and return rasters; the catalog decides where they are written
(``naip_scenes``, ``nlcd_rasters``). Pixels are read over HTTP range requests: a NAIP year is a
mosaic of its quarter quads, copied window by window through warped VRTs onto one grid
(:class:`NaipMosaic`), and NLCD is read only in windows around the regions, never whole.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.parameters import as_list
from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy, HrefRefused
from landuse_kedro.raster import GeoRaster, covering_window, window_bounds
from landuse_kedro.storage import public_url, scrub_urls

logger = logging.getLogger(__name__)

LONLAT = CRS.from_epsg(4326)
public_href = public_url  # an href without its token, as it may be logged, raised or reported


# ------------------------------------------------------------------ href signing


def href_signer(sign: str | None) -> Callable[[str], str]:
    """``planetary_computer``: SAS-signed URLs (the package is the optional ``acquire-pc`` extra);
    None: hrefs as they are. Signing happens just before each read, so tokens never expire mid-run
    and never reach the catalog, the report or the logs."""
    if not sign:
        return lambda href: href
    if sign != "planetary_computer":
        raise ValueError(f"acquire.sign must be null or 'planetary_computer', got {sign!r}.")
    try:
        import planetary_computer
    except ImportError as error:
        raise ImportError(
            "acquire.sign is 'planetary_computer' but the package is not installed: "
            "pip install 'landuse_kedro[acquire-pc]' (or set acquire.sign: null)."
        ) from error
    return planetary_computer.sign


# ------------------------------------------------------------------ STAC search


def _open_client(url: str, policy: HrefPolicy):
    """The STAC API's client; every request it makes (``next`` links too) goes through ``policy``
    and its timeout; an error names the API without a token in its URL, and chains no cause."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    policy.check(url, "acquire.stac_url")
    stac_io = StacApiIO(
        timeout=policy.timeout_s, request_modifier=policy.request_modifier, max_retries=policy.retries
    )
    stac_io.session.hooks["response"].append(policy.redirect_hook)
    try:
        return Client.open(url, stac_io=stac_io)
    except (APIError, OSError) as error:  # requests' ConnectionError/Timeout are OSErrors
        cause = error.__cause__ or error.__context__
        if isinstance(cause, HrefRefused):  # a redirect the policy refused
            raise cause from None
        raise ConnectionError(
            f"The STAC API at {public_url(url)} is unreachable or answered an error: "
            f"{type(error).__name__}: {scrub_urls(str(error))}. Check acquire.stac_url and the network."
        ) from None


def search_naip(acquire: dict[str, Any], naip_present: FileIndex) -> dict[str, list[dict[str, Any]]]:
    """Find the NAIP quads still missing from ``naip_scenes``: a region-year already there is never fetched
    again.

    Args:
        acquire: ``params:acquire`` (``stac_url``, ``collection``, ``asset``, ``regions``, ``years``,
            ``timeout_s``).
        naip_present: ``naip_present``, the GeoTIFFs already in ``01_raw/naip``.

    Returns:
        ``naip_items``: ``<region>_<year>`` -> the STAC items (as dicts: id, href, datetime, bbox) of that
        year over the region's box, sorted by id; empty when every region-year is present.

    Raises:
        ValueError: No regions or years, or a region's box is not [min_lon, min_lat, max_lon, max_lat].
        ConnectionError: The STAC API is unreachable or a search fails.
        LookupError: A region-year has no item with the asset, naming the box and year.
    """
    from pystac_client.exceptions import APIError

    regions, years = acquire.get("regions") or {}, _years(acquire.get("years"))
    if not regions or not years:
        raise ValueError(
            "acquire needs regions and years: kedro run --pipelines acquire --params "
            '"acquire.regions.<name>=<min_lon> <min_lat> <max_lon> <max_lat>,acquire.years=2016 2018"'
        )
    present = {_stem(url) for url in naip_present.urls}
    wanted = [(region, year) for region in sorted(regions) for year in years]
    missing = [(region, year) for region, year in wanted if f"{region}_{year}" not in present]
    for region, year in wanted:
        if (region, year) not in missing:
            logger.info("NAIP %s_%d is already in naip_scenes: not fetched again", region, year)
    if not missing:
        return {}
    policy = HrefPolicy.from_params(acquire)
    url, collection = public_url(acquire["stac_url"]), acquire["collection"]
    client = _open_client(acquire["stac_url"], policy)
    max_items = int(acquire.get("max_items", 1000))
    found = {}
    for region, year in missing:
        bbox = _bbox(regions[region], region)
        items, pages = [], 0
        try:
            search = client.search(
                collections=[collection],
                bbox=bbox,
                datetime=f"{year}-01-01/{year}-12-31",
                limit=min(max_items + 1, 100),
            )
            for page in search.pages():  # bounded: a hostile API can link pages without end
                pages += 1
                items.extend(page.items)
                if len(items) > max_items or pages > max_items:
                    raise RuntimeError(
                        f"The STAC search at {url} returned more than {max_items} items (in {pages} pages) "
                        f"for {region}'s box {bbox} (lon/lat) in {year}: acquire.max_items stops it. "
                        "Split the box into smaller regions, or raise acquire.max_items."
                    )
        except (APIError, OSError) as error:
            raise ConnectionError(
                f"STAC search at {url} failed for {region} {year}: "
                f"{type(error).__name__}: {scrub_urls(str(error))}"
            ) from None
        items = [item for item in items if acquire["asset"] in item.assets]
        if not items:
            raise LookupError(
                f"The STAC API at {url} has no '{collection}' item with an '{acquire['asset']}' asset over "
                f"{region}'s box {bbox} (lon/lat) in {year}. NAIP covers each state every 2-3 years: "
                "check acquire.years and the box."
            )
        logger.info("NAIP %s_%d: %d item(s) from %s", region, year, len(items), url)
        found[f"{region}_{year}"] = []
        for item in sorted(items, key=lambda it: it.id):
            href = item.assets[acquire["asset"]].href  # shown only as public_href
            policy.check(href, f"NAIP item {item.id}")
            entry = {
                "id": item.id,
                "href": href,
                "datetime": item.datetime.isoformat() if item.datetime else None,
                "bbox": list(item.bbox or []),
            }
            outside = _outside(item, bbox, year)
            if outside:  # the API's filter is not trusted: checked again here
                logger.warning("NAIP %s_%d: item %s refused: %s", region, year, item.id, outside)
                entry["refused"] = outside
            found[f"{region}_{year}"].append(entry)
    return found


def _outside(item: Any, bbox: list[float], year: int) -> str | None:
    """Why an item the API returned is not over the box in the year, or None."""
    box = list(item.bbox or [])
    if len(box) not in (4, 6):
        return f"its bbox {box} is not [west, south, east, north]"
    west, south, east, north = box[0], box[1], box[len(box) // 2], box[len(box) // 2 + 1]
    if west > bbox[2] or east < bbox[0] or south > bbox[3] or north < bbox[1]:
        return f"its bbox {box} does not overlap the box {bbox}"
    start = item.datetime or item.common_metadata.start_datetime
    end = item.datetime or item.common_metadata.end_datetime or start
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return "it has no datetime"
    if not start.year <= year <= end.year:
        return f"its date {start.date()} is not in {year}"
    return None


def _years(years: Any) -> list[int]:
    """A list, one year, or years separated by spaces ("2016 2018", as ``--params`` gives them)."""
    if years is None:
        return []
    if isinstance(years, str):
        years = years.replace(",", " ").split()
    elif isinstance(years, int):
        years = [years]
    return sorted({int(year) for year in years})


def _stem(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def _bbox(box: Any, region: str) -> list[float]:
    """[min_lon, min_lat, max_lon, max_lat], from a list or "min_lon min_lat max_lon max_lat"
    (``--params`` splits on commas, so the command line gives numbers separated by spaces)."""
    box = box.get("bbox", box) if isinstance(box, Mapping) else box
    try:
        box = [float(v) for v in (box.replace(",", " ").split() if isinstance(box, str) else box)]
    except (TypeError, ValueError):
        box = [box]
    if len(box) != 4 or not (-180 <= box[0] < box[2] <= 180 and -90 <= box[1] < box[3] <= 90):
        raise ValueError(f"acquire.regions.{region} must be [min_lon, min_lat, max_lon, max_lat], got {box}.")
    return [float(v) for v in box]


# ------------------------------------------------------------------ NAIP: one grid per region-year


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
        naip_items: ``naip_items`` from :func:`search_naip`.
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
                key, items, headers, _bbox(acquire["regions"][region], region), acquire, policy
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


# ------------------------------------------------------------------ NLCD: windows of a remote COG


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
    present = {_stem(url) for url in nlcd_present.urls}
    boxes = [_bbox(box, name) for name, box in sorted((acquire.get("regions") or {}).items())]
    policy = HrefPolicy.from_params(acquire)
    loaders = {}
    for year, source in sorted(editions.items()):
        key = f"nlcd_{int(year)}"
        if key in present:
            logger.info("NLCD %s is already in nlcd_rasters: not fetched again", key)
            continue
        href = _nlcd_href(source, acquire, policy)
        policy.check(href, f"NLCD edition {year}")
        loaders[key] = _NlcdWindows(
            href, tuple(map(tuple, boxes)), float(nlcd.get("margin", 1000)), acquire.get("sign"), policy
        )
    return loaders


def _nlcd_href(source: Mapping[str, Any], acquire: Mapping[str, Any], policy: HrefPolicy) -> str:
    from pystac_client.exceptions import APIError

    if source.get("href"):
        return source["href"]
    if not (source.get("collection") and source.get("item")):
        raise ValueError(f"An NLCD edition needs href, or collection + item (+ asset), got {dict(source)}.")
    client = _open_client(acquire["stac_url"], policy)
    url = public_url(acquire["stac_url"])
    try:
        item = client.get_collection(source["collection"]).get_item(source["item"])
    except (APIError, OSError) as error:
        raise ConnectionError(
            f"The STAC API at {url} failed for NLCD item '{source['item']}': "
            f"{type(error).__name__}: {scrub_urls(str(error))}"
        ) from None
    if item is None:
        raise LookupError(f"No item '{source['item']}' in collection '{source['collection']}' at {url}.")
    asset = source.get("asset", "data")
    if asset not in item.assets:
        raise LookupError(f"NLCD item '{item.id}' has no asset '{asset}' (it has {sorted(item.assets)}).")
    return public_href(item.assets[asset].href)


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


def summarise_acquisition(
    naip_items: dict[str, list[dict[str, Any]]],
    naip_present: FileIndex,
    naip_refused: dict[str, list[dict[str, Any]]],
    acquire: dict[str, Any],
) -> dict[str, Any]:
    """Record the provenance of ``01_raw/naip``: which STAC items made each scene this run fetched, and
    which scenes were already there.

    Args:
        naip_items: ``naip_items`` from :func:`search_naip`.
        naip_present: ``naip_present``; scenes fetched by this run are not counted as present, even when
            the index is listed after they were saved.
        naip_refused: ``naip_refused`` from :func:`mosaic_naip`.
        acquire: ``params:acquire`` (``stac_url``, ``collection``).

    Returns:
        ``acquire_report``: ``stac_url`` (without token), ``collection``, ``fetched`` (scene -> its items'
        id, href without its token, datetime), ``refused`` (scene -> the items left out, with the reason)
        and ``already_present`` (scene keys).
    """
    refused = {key: {item["id"] for item in items} for key, items in naip_refused.items()}
    return {
        "stac_url": public_url(acquire["stac_url"]),
        "collection": acquire["collection"],
        "fetched": {
            key: [
                {"id": item["id"], "href": public_href(item["href"]), "datetime": item.get("datetime")}
                for item in items
                if item["id"] not in refused.get(key, ())
            ]
            for key, items in sorted(naip_items.items())
        },
        "refused": {key: items for key, items in sorted(naip_refused.items()) if items},
        # present before this run (the index may be listed after the new scenes were saved)
        "already_present": sorted({_stem(url) for url in naip_present.urls} - set(naip_items)),
    }
