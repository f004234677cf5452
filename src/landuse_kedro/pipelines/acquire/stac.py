"""acquire's side of the STAC API: the client (every request through the trust policy), the
``search_naip`` node, the check of what the search returned, and the lookup of an NLCD edition's item.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy, HrefRefused
from landuse_kedro.pipelines.acquire.regions import parse_years, region_bbox
from landuse_kedro.pipelines.acquire.tokens import public_href
from landuse_kedro.scene_keys import key_of_url, scene_key
from landuse_kedro.storage import public_url, scrub_urls

logger = logging.getLogger(__name__)


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
    regions, years = acquire.get("regions") or {}, parse_years(acquire.get("years"))
    if not regions or not years:
        raise ValueError(
            "acquire needs regions and years: kedro run --pipelines acquire --params "
            '"acquire.regions.<name>=<min_lon> <min_lat> <max_lon> <max_lat>,acquire.years=2016 2018"'
        )
    present = {key_of_url(url) for url in naip_present.urls}
    wanted = [(region, year) for region in sorted(regions) for year in years]
    missing = [(region, year) for region, year in wanted if scene_key(region, year) not in present]
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
        bbox = region_bbox(regions[region], region)
        items = _search(client, url, collection, bbox, region, year, max_items)
        items = [item for item in items if acquire["asset"] in item.assets]
        if not items:
            raise LookupError(
                f"The STAC API at {url} has no '{collection}' item with an '{acquire['asset']}' asset over "
                f"{region}'s box {bbox} (lon/lat) in {year}. NAIP covers each state every 2-3 years: "
                "check acquire.years and the box."
            )
        logger.info("NAIP %s_%d: %d item(s) from %s", region, year, len(items), url)
        found[scene_key(region, year)] = [
            _entry(item, acquire["asset"], policy, bbox, region, year)
            for item in sorted(items, key=lambda it: it.id)
        ]
    return found


def _search(
    client: Any, url: str, collection: str, bbox: list[float], region: str, year: int, max_items: int
) -> list[Any]:
    """The items of one region-year, page by page up to ``max_items``: a hostile API can link pages
    without end. ``url`` is the API without its token, as errors name it."""
    from pystac_client.exceptions import APIError

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
    return items


def _entry(
    item: Any, asset: str, policy: HrefPolicy, bbox: list[float], region: str, year: int
) -> dict[str, Any]:
    """One item as ``naip_items`` holds it, its href checked by the trust policy; an item outside the
    box or year is kept with the reason it is ``refused``, so the report can name it."""
    href = item.assets[asset].href  # shown only as public_href
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
    return entry


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


def nlcd_href(source: Mapping[str, Any], acquire: Mapping[str, Any], policy: HrefPolicy) -> str:
    """An NLCD edition's COG: its ``href``, or its STAC item's asset (returned without a token: it is
    signed just before each read, like every href)."""
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
