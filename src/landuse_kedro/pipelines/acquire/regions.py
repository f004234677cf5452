"""What acquire is asked for and what 01_raw already holds: the regions' boxes and the years as
parameters give them (a list, or numbers separated by spaces from ``--params``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rasterio.crs import CRS

LONLAT = CRS.from_epsg(4326)  # the CRS of the regions' boxes


def region_bbox(box: Any, region: str) -> list[float]:
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


def parse_years(years: Any) -> list[int]:
    """A list, one year, or years separated by spaces ("2016 2018", as ``--params`` gives them)."""
    if years is None:
        return []
    if isinstance(years, str):
        years = years.replace(",", " ").split()
    elif isinstance(years, int):
        years = [years]
    return sorted({int(year) for year in years})
