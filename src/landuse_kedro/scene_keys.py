"""How the raw rasters are named, built and parsed here only: a NAIP scene is ``<region>_<year>``
(``middlesex_2016``), an NLCD edition ``nlcd_<year>``; a raster already in storage is known by its
file name without the extension."""

from __future__ import annotations

import re

_SCENE_KEY = re.compile(r"^(?P<region>.+)_(?P<year>\d{4})$")
_NLCD_KEY = re.compile(r"^nlcd_(?P<year>\d{4})$")


def scene_key(region: str, year: int) -> str:
    return f"{region}_{int(year)}"


def parse_scene_key(key: str) -> tuple[str, int]:
    match = _SCENE_KEY.match(key)
    if not match:
        raise ValueError(f"NAIP scene '{key}' is not named <region>_<year> (e.g. middlesex_2016).")
    return match["region"], int(match["year"])


def nlcd_key(year: int) -> str:
    return f"nlcd_{int(year)}"


def nlcd_year(key: str) -> int:
    match = _NLCD_KEY.match(key)
    if not match:
        raise ValueError(f"NLCD raster '{key}' is not named nlcd_<year> (e.g. nlcd_2011).")
    return int(match["year"])


def key_of_url(url: str) -> str:
    """A raster's key from its file's URL (``.../middlesex_2016.tif`` -> ``middlesex_2016``): how a
    region-year or edition already in 01_raw is recognised."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]
