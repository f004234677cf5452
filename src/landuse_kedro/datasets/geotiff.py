"""GeoTIFF rasters through rasterio + fsspec (local paths, ``abfs://``, ``memory://``, ...).

Loading returns a lazy :class:`RasterSource`: metadata only, pixels come from windowed reads that
open the file each time, so a source pickles (to Spark workers, parallel runners) and a scene never
has to fit in memory. Saving takes a :class:`landuse_kedro.raster.GeoRaster` and writes a tiled
(256 x 256 blocks), DEFLATE-compressed GeoTIFF whose extra bands are not alpha.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable
from xml.sax.saxutils import escape

import fsspec
import numpy as np
import rasterio
from affine import Affine
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from landuse_kedro.datasets.commit import clean_leftovers, staging_path
from landuse_kedro.raster import GeoRaster
from landuse_kedro.storage import note_read_failure

DEFAULT_SAVE_ARGS: dict[str, Any] = {
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "deflate",
    # GDAL would mark a 4th uint8 band as alpha (RGBA); NAIP's 4th band is near infrared.
    "alpha": "unspecified",
}
GTIFF_ONLY = ("tiled", "blockxsize", "blockysize", "alpha")  # the COG driver tiles its own way (BLOCKSIZE)

WindowLike = Window | tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class RasterSource:
    """A GeoTIFF's metadata plus windowed reads. Holds no open handle and no pixels.

    ``storage_options`` may hold secrets, so they stay out of ``repr`` (and so out of logs).
    """

    path: str
    protocol: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    nodata: float | None
    dtypes: tuple[str, ...]
    descriptions: tuple[str | None, ...]
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    open_args: dict[str, Any] = field(default_factory=dict, repr=False)
    block_shapes: tuple[tuple[int, int], ...] = ()  # (rows, cols) of each band's internal blocks

    def __repr__(self) -> str:
        return (
            f"RasterSource({self.protocol}://{self.path}, {self.count}x{self.height}x{self.width} "
            f"{self.dtypes[0]}, {self.crs.to_string() if self.crs else None}, res={self.res})"
        )

    @property
    def bounds(self) -> BoundingBox:
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return BoundingBox(min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    def open(self) -> rasterio.io.DatasetReader:
        """A fresh rasterio handle; the caller closes it (``with source.open() as dataset``)."""
        return _open(self.path, self.protocol, self.storage_options, **self.open_args)

    def read(
        self, window: WindowLike | None = None, indexes: int | list[int] | None = None, **kwargs: Any
    ) -> np.ndarray:
        """Pixels of ``window`` (all of the raster when None): (bands, rows, cols), or (rows, cols)
        when ``indexes`` is one int, as ``rasterio``'s ``read``."""
        with self.open() as dataset:
            return dataset.read(indexes=indexes, window=window, **kwargs)

    def colormap(self, band: int = 1) -> dict[int, tuple[int, ...]] | None:
        """The band's palette, or None when it has none."""
        with self.open() as dataset:
            try:
                return dataset.colormap(band)
            except ValueError:
                return None


class GeoTiffDataset(AbstractDataset[GeoRaster, RasterSource]):
    """``GeoTiffDataset`` loads a GeoTIFF as a lazy :class:`RasterSource` and saves a
    :class:`~landuse_kedro.raster.GeoRaster` as a GeoTIFF, through rasterio and fsspec (local paths,
    ``abfss://``, ``memory://``, ...). kedro-datasets' experimental ``rioxarray.GeoTIFFDataset`` loads a
    whole xarray from a path and writes in place, without storage credentials; this one needs to hand
    Spark workers a picklable source they read window by window, from object storage too, and never to
    leave half a raster where the last good one was.

    Loading reads the header only (CRS, transform, size, bands, nodata); pixels come from
    ``source.read(window=...)``, which opens the file again each time, so a source pickles to
    Spark workers and a scene never has to fit in memory. Saving writes a tiled (256 x 256),
    DEFLATE-compressed GeoTIFF whose 4th band is not alpha; ``save_args: {driver: COG}`` writes a
    Cloud Optimized GeoTIFF. A :class:`ScaledRaster` also gets its bands' scale and offset, so a GIS
    reads the quantities its integer codes stand for (and, as a COG, nearest-neighbour overviews unless
    ``save_args`` say otherwise: the default cubic ones invent codes). A local file is written beside
    and renamed over, a remote one is written to a local temporary file and uploaded from it (blocks
    committed at once, never the whole file in memory): a reader never sees half a raster. A raster
    with ``categories`` also gets its class names beside it (``<file>.aux.xml`` for GDAL,
    ``<name>.qml`` for QGIS); a ScaledRaster with a ``ramp_band``, a QGIS style showing that band as a
    white -> red ramp.

    Besides a :class:`GeoRaster`, ``save`` takes a :class:`StreamedRaster` (its pixels come
    window by window, e.g. a mosaic of remote scenes larger than memory), written block by block.

    Examples:
        Using the [YAML API](https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/),
        as this project's catalog does (``conf/base/catalog_raw.yml`` and
        ``catalog_development_inference.yml``): one GeoTIFF per partition of a folder.

        ```yaml
        naip_scenes:  # <region>_<year>.tif, loaded as {"<region>_<year>": load function}
          type: partitions.PartitionedDataset
          path: ${globals:data_root}/01_raw/naip
          filename_suffix: .tif
          credentials: storage
          dataset:
            type: landuse_kedro.datasets.GeoTiffDataset

        region_class_rasters:  # saved as <region>/<name>_classes.tif, Cloud Optimized
          type: partitions.PartitionedDataset
          path: ${globals:data_root}/07_model_output/regions
          filename_suffix: _classes.tif
          credentials: storage
          dataset:
            type: landuse_kedro.datasets.GeoTiffDataset
            save_args:
              driver: COG
        ```

        Using the [Python API](https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/):

        >>> import numpy as np
        >>> from affine import Affine
        >>> from landuse_kedro.datasets import GeoTiffDataset
        >>> from landuse_kedro.raster import GeoRaster
        >>>
        >>> scene = GeoRaster(np.zeros((4, 512, 512), np.uint8), "EPSG:32619",
        ...                   Affine(1.0, 0.0, 300_000.0, 0.0, -1.0, 4_700_000.0))
        >>> dataset = GeoTiffDataset(filepath=str(tmp_path / "scene.tif"))
        >>> dataset.save(scene)
        >>> source = dataset.load()  # the header only
        >>> source.count, source.height, source.width, source.crs.to_string()
        (4, 512, 512, 'EPSG:32619')
        >>> source.read(window=((0, 224), (0, 224))).shape  # (rows, cols) window: one tile
        (4, 224, 224)
    """

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``GeoTiffDataset`` pointing to one GeoTIFF file.

        Args:
            filepath: Path or URL of the GeoTIFF, with any fsspec protocol (``abfss://``,
                ``memory://``; none means a local file).
            load_args: Options passed to ``rasterio.open`` on every open of the file (the header
                read by ``load`` and each ``RasterSource.read``), e.g. ``{"sharing": False}``.
            save_args: GDAL creation options over the defaults (tiled 256 x 256 blocks, DEFLATE,
                ``alpha: unspecified``), e.g. ``{"predictor": 2}`` or ``{"compress": "lzw"}``.
                ``{"driver": "COG"}`` writes a Cloud Optimized GeoTIFF (the COG driver does its own
                tiling and overviews, so the GTiff-only defaults are dropped).
            credentials: Storage options for fsspec, e.g. an Azure account name and key; kept
                out of ``repr`` of the loaded source.
            fs_args: Further arguments to the fsspec filesystem, merged over ``credentials``.
            metadata: Any arbitrary metadata; ignored by Kedro, read by plugins (kedro-viz's
                ``layer``).
        """
        self._filepath = filepath  # as configured, e.g. with the account in an abfss:// URL
        self._protocol, self._path = get_protocol_and_path(filepath)
        self._storage_options = {**deepcopy(credentials or {}), **deepcopy(fs_args or {})}
        self._fs = fsspec.filesystem(self._protocol, **self._storage_options)
        if self._protocol != "file":  # e.g. abfss://container@account.dfs.../path -> container/path
            self._path = fsspec.core.strip_protocol(filepath)
        self._load_args = deepcopy(load_args or {})
        save_args = deepcopy(save_args or {})
        self._cog = str(save_args.get("driver", "GTiff")).upper() == "COG"
        defaults = DEFAULT_SAVE_ARGS
        if self._cog:
            defaults = {key: value for key, value in defaults.items() if key not in GTIFF_ONLY}
        self._save_args = {**defaults, **save_args}
        self.metadata = metadata

    def load(self) -> RasterSource:
        """Reads the GeoTIFF's header; no pixels.

        Returns:
            A :class:`RasterSource`: metadata plus ``read(window, indexes)``, picklable.

        Raises:
            DatasetError: The file is missing or is not a raster rasterio can open.
        """
        try:
            dataset = _open(self._path, self._protocol, self._storage_options, **self._load_args)
        except rasterio.errors.RasterioIOError as error:
            raise DatasetError(f"Cannot read GeoTIFF '{self._path}': {error}") from error
        with dataset:
            return RasterSource(
                # absolute: Spark executors open it from their own working directories
                path=str(Path(self._path).absolute()) if self._protocol == "file" else self._path,
                protocol=self._protocol,
                crs=dataset.crs,
                transform=dataset.transform,
                width=dataset.width,
                height=dataset.height,
                count=dataset.count,
                nodata=dataset.nodata,
                dtypes=tuple(dataset.dtypes),
                descriptions=tuple(dataset.descriptions),
                storage_options=self._storage_options,
                open_args=self._load_args,
                block_shapes=tuple(tuple(shape) for shape in dataset.block_shapes),
            )

    def save(self, data: GeoRaster | StreamedRaster) -> None:
        """Writes ``data`` as the GeoTIFF, replacing any file there whole.

        Args:
            data: A :class:`GeoRaster` (an in-memory array with its grid, palette, class names and
                tags; a :class:`ScaledRaster` with its bands' scales and offsets too) or a
                :class:`StreamedRaster` (written window by window; GTiff driver only).

        Raises:
            DatasetError: ``data`` is neither, or a StreamedRaster is to be written as a COG.
        """
        if not isinstance(data, GeoRaster | StreamedRaster):
            raise DatasetError(
                f"GeoTiffDataset saves a GeoRaster or a StreamedRaster, got {type(data).__name__}."
            )
        if isinstance(data, StreamedRaster) and self._cog:
            raise DatasetError(
                "The COG driver cannot write window by window: save a GeoRaster, "
                "or write a GTiff (the default driver)."
            )
        profile = {
            "driver": "GTiff",
            "width": data.width,
            "height": data.height,
            "count": data.count,
            "dtype": np.dtype(data.dtype).name if isinstance(data, StreamedRaster) else data.array.dtype.name,
            "crs": data.crs,
            "transform": data.transform,
            "nodata": data.nodata,
            **self._save_args,
        }
        if (
            self._cog
            and isinstance(data, ScaledRaster)
            and not {"resampling", "overview_resampling"} & {key.lower() for key in profile}
        ):
            # the COG driver's default overviews (cubic, for a raster without a palette) overshoot:
            # codes beyond the top of the scale (a probability above 1) and into nodata
            profile["resampling"] = "nearest"
        self._fs.makedirs(str(PurePosixPath(self._path).parent), exist_ok=True)
        if self._protocol == "file":  # written beside, then renamed over: never half a raster
            clean_leftovers(self._fs, self._path)
            staged = staging_path(self._path)
            try:
                with rasterio.open(staged, "w", **profile) as dataset:
                    _write(dataset, data)
                os.replace(staged, self._path)
            finally:
                if os.path.exists(staged):
                    os.remove(staged)
        else:  # object stores cannot seek while writing: the file is built once, on local disk (never
            # in memory: a county mosaic is larger), then uploaded from it in blocks committed at once
            with tempfile.TemporaryDirectory(prefix="geotiff-") as folder:
                local = os.path.join(folder, PurePosixPath(self._path).name)
                with rasterio.open(local, "w", **profile) as dataset:
                    _write(dataset, data)
                self._fs.put_file(local, self._path)
        for sidecar, content in _legend_files(self._path, data).items():
            self._fs.pipe_file(sidecar, content)
        # adlfs caches folder listings, which rasterio's opener consults: forget the new file's folder
        self._fs.invalidate_cache(str(PurePosixPath(self._path).parent))
        self._fs.invalidate_cache(self._path)

    def _exists(self) -> bool:
        return self._fs.exists(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "save_args": self._save_args}


def _open(path: str, protocol: str, storage_options: dict[str, Any], **open_args: Any):
    if protocol == "file":
        return rasterio.open(path, **open_args)
    filesystem = _NotingFilesystem(fsspec.filesystem(protocol, **storage_options))
    return rasterio.open(path, opener=filesystem, **open_args)


class _NotingFilesystem:
    """An fsspec filesystem for rasterio's opener whose files note a failed read
    (``storage.note_read_failure``): GDAL turns it into "Read failed", and an outage must still
    be told from a damaged block (``storage.unreachable_cause``)."""

    def __init__(self, filesystem: fsspec.AbstractFileSystem) -> None:
        self._filesystem = filesystem

    def __getattr__(self, name: str) -> Any:
        return getattr(self._filesystem, name)

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> _NotingFile:
        return _NotingFile(self._filesystem.open(path, mode, **kwargs))


class _NotingFile:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except Exception as error:  # raised into GDAL it would be lost, not reported
            note_read_failure(error)
            return b""  # a short read: GDAL fails this read with its own error

    def __enter__(self) -> _NotingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _legend_files(path: str, data: GeoRaster) -> dict[str, bytes]:
    """Class names beside the GeoTIFF, for a raster with ``categories``: GDAL's PAM sidecar
    (``<file>.aux.xml``: ``gdalinfo`` lists the categories) and a QGIS default style
    (``<name>.qml``: QGIS shows the legend with names and the palette's colours on opening); for a
    :class:`ScaledRaster` with a ``ramp_band``, the QGIS style of that band only."""
    if isinstance(data, ScaledRaster) and data.ramp_band:
        return {f"{PurePosixPath(path).with_suffix('')}.qml": _ramp_style(data).encode()}
    if not data.categories:
        return {}
    names = "".join(f"<Category>{escape(name)}</Category>" for name in data.categories)
    pam = (
        f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{names}</CategoryNames></PAMRasterBand>'
        "</PAMDataset>\n"
    )
    entries = "".join(
        f'<paletteEntry value="{value}" color="#{r:02x}{g:02x}{b:02x}" '
        f'alpha="{rgba[3] if len(rgba) > 3 else 255}" '
        f'label="{escape(data.categories[value], {chr(34): "&quot;"})}"/>'
        for value, rgba in sorted((data.colormap or {}).items())
        if 0 < value < len(data.categories)
        for r, g, b in [rgba[:3]]
    )
    qml = (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology"><pipe>'
        '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">'
        f"<colorPalette>{entries}</colorPalette></rasterrenderer></pipe></qgis>\n"
    )
    stem = str(PurePosixPath(path).with_suffix(""))
    return {f"{path}.aux.xml": pam.encode(), f"{stem}.qml": qml.encode()}


def _ramp_style(data: ScaledRaster) -> str:
    """QGIS style: ``ramp_band`` white -> red over ``ramp_codes`` in the band's own units (QGIS
    applies GDAL's scale and offset before styling, so the legend reads 0 .. 1, not codes)."""
    band = data.ramp_band
    low, high = (code * data.scale(band) + data.offset(band) for code in data.ramp_codes)
    items = "".join(
        f'<item value="{value:g}" color="{colour}" alpha="255" label="{value:g}"/>'
        for value, colour in ((low, "#ffffff"), (high, "#d7191c"))
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology"><pipe>'
        f'<rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" '
        f'classificationMin="{low:g}" classificationMax="{high:g}" nodataColor="">'
        "<minMaxOrigin><limits>None</limits><extent>WholeRaster</extent></minMaxOrigin>"
        '<rastershader><colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        f'minimumValue="{low:g}" maximumValue="{high:g}">{items}</colorrampshader></rastershader>'
        "</rasterrenderer></pipe></qgis>\n"
    )


@dataclass(frozen=True)
class ScaledRaster(GeoRaster):
    """A :class:`GeoRaster` of quantities stored as integer codes, quantity = code * scale + offset per
    band (GDAL's band scale and offset: ``gdalinfo``, rasterio's ``scales`` and QGIS give the quantity),
    so e.g. probabilities take a uint8 band, not a float32 one. ``scales``/``offsets``: one per band,
    or empty for 1 and 0. ``ramp_band`` (1-based; none when 0) is QGIS's default style: a white -> red
    ramp from code ``ramp_codes[0]`` to ``ramp_codes[1]``."""

    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    ramp_band: int = 0
    ramp_codes: tuple[int, int] = (0, 255)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("scales", "offsets"):
            values = getattr(self, name)
            if values and len(values) != self.count:
                raise ValueError(f"{len(values)} band {name} for {self.count} bands.")
        if not 0 <= self.ramp_band <= self.count:
            raise ValueError(f"ramp_band {self.ramp_band} is not a band of {self.count}.")
        if self.ramp_band and self.categories:
            raise ValueError("A raster has one QGIS style: a ramp_band or categories, not both.")

    def scale(self, band: int) -> float:
        return self.scales[band - 1] if self.scales else 1.0

    def offset(self, band: int) -> float:
        return self.offsets[band - 1] if self.offsets else 0.0


@runtime_checkable
class StreamedRaster(Protocol):
    """A raster whose pixels arrive window by window: ``blocks()`` yields (window, array) pairs
    that cover the grid; ``colormap``, ``categories`` and ``tags`` as in :class:`GeoRaster`."""

    crs: Any
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...] | None
    colormap: dict[int, tuple[int, ...]] | None
    categories: tuple[str, ...] | None
    tags: dict[str, str] | None

    def blocks(self) -> Iterator[tuple[Window, np.ndarray]]: ...


def _write(dataset: rasterio.io.DatasetWriter, data: GeoRaster | StreamedRaster) -> None:
    """Palette first: once pixels are written GDAL can no longer change the photometric tag."""
    if data.colormap:
        dataset.write_colormap(1, data.colormap)
    if data.tags:
        dataset.update_tags(**data.tags)
    for band, description in enumerate(data.descriptions or (), start=1):
        if description:
            dataset.set_band_description(band, description)
    if isinstance(data, ScaledRaster):  # stored in the GeoTIFF itself (GDAL_METADATA), no side file
        dataset.scales = [data.scale(band) for band in range(1, data.count + 1)]
        dataset.offsets = [data.offset(band) for band in range(1, data.count + 1)]
    if isinstance(data, GeoRaster):
        dataset.write(data.array)
        return
    for window, block in data.blocks():
        dataset.write(block, window=window)
