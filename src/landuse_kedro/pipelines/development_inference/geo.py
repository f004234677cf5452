"""Georeferenced outputs of the development maps: one-pixel-per-tile class rasters and the change
candidates as GeoJSON, so both open in a GIS aligned with the imagery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from affine import Affine
from matplotlib.colors import to_rgb
from rasterio.warp import transform_geom

from landuse_kedro.pipelines.development_inference.analysis import NODATA
from landuse_kedro.raster import GeoRaster

GEOJSON_CRS = "EPSG:4326"


def tile_grid_transform(scene_transform: Affine, row_off: int, col_off: int, tile_size: int) -> Affine:
    """Transform of a raster whose pixel (0, 0) is the tile at pixel offset (row_off, col_off) of the
    scene and whose pixels are tiles: the scene's pixel size times the tile size. Composing affines
    keeps any rotation or south-up orientation of the scene."""
    return scene_transform @ Affine.translation(col_off, row_off) @ Affine.scale(tile_size)


def colour_table(map_classes: Sequence[str], colours: Mapping[str, str]) -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF palette: class codes in their map colours, nodata transparent."""
    missing = [name for name in map_classes if name not in colours]
    if missing:
        raise ValueError(f"No map colour for classes {missing}; set them in development_inference.colours.")
    table = {NODATA: (0, 0, 0, 0)}
    for code, name in enumerate(map_classes, start=1):
        red, green, blue = (round(255 * channel) for channel in to_rgb(colours[name]))
        table[code] = (red, green, blue, 255)
    return table


def class_raster(grid: np.ndarray, crs: str, transform: Affine, palette: Mapping[int, tuple[int, ...]],  # noqa: PLR0917
                 description: str, map_classes: Sequence[str]) -> GeoRaster:
    """A uint8 one-band GeoRaster of class codes with nodata 0, the map's colour table and the
    class names (code i is ``map_classes[i - 1]``), so a GIS shows a legend, not numbers."""
    return GeoRaster(
        array=np.asarray(grid, dtype=np.uint8)[None],
        crs=crs,
        transform=transform,
        nodata=NODATA,
        colormap=dict(palette),
        descriptions=(description,),
        categories=("nodata", *map_classes),
    )


def candidates_geojson(candidates: pd.DataFrame, older_column: str = "older_class",
                       newer_column: str = "predicted_class") -> dict:
    """Candidate tiles as a GeoJSON FeatureCollection of their footprints in EPSG:4326 (the only CRS
    RFC 7946 allows), most confident first."""
    features = []
    for tile in candidates.itertuples(index=False):
        footprint = {
            "type": "Polygon",
            "coordinates": [[
                (tile.minx, tile.miny), (tile.maxx, tile.miny), (tile.maxx, tile.maxy),
                (tile.minx, tile.maxy), (tile.minx, tile.miny),
            ]],
        }
        features.append({
            "type": "Feature",
            "id": tile.tile_id,
            "geometry": transform_geom(tile.crs, GEOJSON_CRS, footprint),
            "properties": {
                "id": tile.tile_id,
                "rank": int(tile.rank),
                "probability": float(tile.change_probability),
                "older_class": getattr(tile, older_column),
                "newer_class": getattr(tile, newer_column),
                "row": int(tile.row),
                "col": int(tile.col),
            },
        })
    return {"type": "FeatureCollection", "features": features}
