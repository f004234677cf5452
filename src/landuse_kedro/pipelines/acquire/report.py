"""The ``summarise_acquisition`` node: the provenance of ``01_raw/naip`` (``acquire_report``), with
every href shown without its token.
"""

from __future__ import annotations

from typing import Any

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.acquire.tokens import public_href
from landuse_kedro.scene_keys import key_of_url
from landuse_kedro.storage import public_url


def summarise_acquisition(
    naip_items: dict[str, list[dict[str, Any]]],
    naip_present: FileIndex,
    naip_refused: dict[str, list[dict[str, Any]]],
    acquire: dict[str, Any],
) -> dict[str, Any]:
    """Record the provenance of ``01_raw/naip``: which STAC items made each scene this run fetched, and
    which scenes were already there.

    Args:
        naip_items: ``naip_items`` from :func:`.stac.search_naip`.
        naip_present: ``naip_present``; scenes fetched by this run are not counted as present, even when
            the index is listed after they were saved.
        naip_refused: ``naip_refused`` from :func:`.mosaic.mosaic_naip`.
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
        "already_present": sorted({key_of_url(url) for url in naip_present.urls} - set(naip_items)),
    }
