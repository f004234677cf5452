"""Pure raster helpers shared by the pipelines: an in-memory raster to save, label reprojection onto
an image grid, the tile grid and the NLCD -> class table.

Everything here works on arrays and on sources with windowed reads (``datasets.geotiff.RasterSource``),
never on paths, so nodes stay pure and a scene larger than memory is processed window by window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class GeoRaster:
    """An in-memory raster to save: ``array`` is (bands, rows, cols); ``colormap`` applies to band 1
    (GeoTIFF palettes exist only there), as ``{value: (r, g, b[, a])}``."""

    array: np.ndarray
    crs: Any
    transform: Affine
    nodata: float | int | None = None
    colormap: dict[int, tuple[int, ...]] | None = None
    descriptions: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"GeoRaster array must be (bands, rows, cols), got shape {self.array.shape}.")
        if self.descriptions is not None and len(self.descriptions) != self.array.shape[0]:
            raise ValueError(
                f"{len(self.descriptions)} band descriptions for {self.array.shape[0]} bands."
            )
        if self.colormap and (self.array.shape[0] != 1 or self.array.dtype not in (np.uint8, np.uint16)):
            raise ValueError("A GeoTIFF palette needs a single uint8/uint16 band; GDAL drops it otherwise.")
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))

    @property
    def count(self) -> int:
        return self.array.shape[0]

    @property
    def height(self) -> int:
        return self.array.shape[1]

    @property
    def width(self) -> int:
        return self.array.shape[2]
