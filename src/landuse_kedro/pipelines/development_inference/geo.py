"""Georeferenced outputs of the development maps: one-pixel-per-tile class rasters, their mosaic
and the change candidates as GeoJSON, so all open in a GIS aligned with the imagery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from matplotlib.colors import to_rgb
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform, reproject, transform_geom

from landuse_kedro.pipelines.development_inference.analysis import NODATA
from landuse_kedro.raster import GeoRaster, WindowedRaster

GEOJSON_CRS = "EPSG:4326"


def tile_grid_transform(scene_transform: Affine, row_off: int, col_off: int, tile_size: int) -> Affine:
    """Transform of a raster whose pixel (0, 0) is the tile at pixel offset (row_off, col_off) of the
    scene and whose pixels are tiles: the scene's pixel size times the tile size. Composing affines
    keeps any rotation or south-up orientation of the scene."""
    return scene_transform @ Affine.translation(col_off, row_off) @ Affine.scale(tile_size)


def colour_table(
    map_classes: Sequence[str], colours: Mapping[str, str]
) -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF palette: class codes in their map colours, nodata transparent."""
    missing = [name for name in map_classes if name not in colours]
    if missing:
        raise ValueError(f"No map colour for classes {missing}; set them in development_inference.colours.")
    table = {NODATA: (0, 0, 0, 0)}
    for code, name in enumerate(map_classes, start=1):
        red, green, blue = (round(255 * channel) for channel in to_rgb(colours[name]))
        table[code] = (red, green, blue, 255)
    return table


def class_raster(
    grid: np.ndarray,
    crs: str,
    transform: Affine,
    palette: Mapping[int, tuple[int, ...]],  # noqa: PLR0917
    description: str,
    map_classes: Sequence[str],
    tags: Mapping[str, str],
) -> GeoRaster:
    """A uint8 one-band GeoRaster of class codes with nodata 0, the map's colour table and the
    class names (code i is ``map_classes[i - 1]``), so a GIS shows a legend, not numbers; ``tags``
    (region, years) say what it maps when the file is found alone."""
    return GeoRaster(
        array=np.asarray(grid, dtype=np.uint8)[None],
        crs=crs,
        transform=transform,
        nodata=NODATA,
        colormap=dict(palette),
        descriptions=(description,),
        categories=("nodata", *map_classes),
        tags=dict(tags),
    )


def provenance_tags(provenance: Mapping[str, Any]) -> dict[str, str]:
    """The run and the model that made a raster, as GeoTIFF tags (``gdalinfo`` lists them)."""
    model = provenance["model"]
    return {
        "run_id": str(provenance["run_id"]),
        "project_version": str(provenance["project_version"]),
        "model_version": str(model.get("version") or "unversioned"),
        "model_sha256": str(model["sha256"]),
        "model_precision": str(model["precision"]),
    }


def candidates_geojson(
    candidates: pd.DataFrame, properties: Sequence[str], provenance: Mapping[str, Any]
) -> dict:
    """Candidate tiles as a GeoJSON FeatureCollection of their footprints in EPSG:4326 (the only CRS
    RFC 7946 allows), most confident first; ``properties`` are table columns, named as in the CSV.
    ``provenance`` (run and model) is a foreign member of the collection (RFC 7946, 6.1), which GIS
    readers ignore and a reader of the file finds."""
    features = []
    for tile in candidates.to_dict("records"):
        footprint = {
            "type": "Polygon",
            "coordinates": [
                [
                    (tile["minx"], tile["miny"]),
                    (tile["maxx"], tile["miny"]),
                    (tile["maxx"], tile["maxy"]),
                    (tile["minx"], tile["maxy"]),
                    (tile["minx"], tile["miny"]),
                ]
            ],
        }
        features.append(
            {
                "type": "Feature",
                "id": tile["tile_id"],
                "geometry": transform_geom(tile["crs"], GEOJSON_CRS, footprint),
                "properties": {name: _json_value(tile[name]) for name in properties},
            }
        )
    return {"type": "FeatureCollection", "provenance": dict(provenance), "features": features}


def _json_value(value):
    """numpy scalars -> Python, missing -> null (JSON has no NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def mosaic(sources: Sequence[WindowedRaster], crs: str, nodata: int) -> tuple[np.ndarray, Affine]:
    """One-band class rasters merged onto one north-up grid in ``crs``, at the finest of their
    resolutions there, by nearest neighbour (codes stay codes). Earlier sources win overlaps;
    cells no source covers are ``nodata``."""
    merged, transform = mosaic_bands(sources, crs, nodata, 1)
    return merged[0], transform


def mosaic_bands(
    sources: Sequence[WindowedRaster], crs: str, nodata: int, count: int
) -> tuple[np.ndarray, Affine]:
    """Bands 1..``count`` of uint8 rasters merged as :func:`mosaic` merges one, into (count, rows,
    cols): a cell takes all its bands from the first source with data there, so a cell's bands
    always describe one tile (a region's probabilities are never mixed with another's)."""
    if not sources:
        raise ValueError("No raster to mosaic.")
    footprints, sizes = [], []
    for source in sources:
        transform, width, height = calculate_default_transform(
            source.crs,
            crs,
            source.width,
            source.height,
            *array_bounds(source.height, source.width, source.transform),
        )
        footprints.append(array_bounds(height, width, transform))
        sizes.append(min(abs(transform.a), abs(transform.e)))
    size = min(sizes)
    west, south = min(b[0] for b in footprints), min(b[1] for b in footprints)
    east, north = max(b[2] for b in footprints), max(b[3] for b in footprints)
    # whole cells of the common size, snapped to multiples of it (mosaics of a county line up)
    west, south = np.floor(west / size) * size, np.floor(south / size) * size
    east, north = np.ceil(east / size) * size, np.ceil(north / size) * size
    transform = Affine(size, 0, west, 0, -size, north)
    shape = (count, round((north - south) / size), round((east - west) / size))
    merged = np.full(shape, nodata, dtype=np.uint8)
    for source in sources:
        warped = np.full_like(merged, nodata)
        reproject(
            source.read(indexes=list(range(1, count + 1))),
            warped,
            src_transform=source.transform,
            src_crs=source.crs,
            src_nodata=nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=nodata,
            resampling=Resampling.nearest,
        )
        take = (merged == nodata).all(axis=0) & (warped != nodata).any(axis=0)
        merged[:, take] = warped[:, take]
    return merged, transform
