"""A STAC catalog of the run's outputs, so a STAC client (pystac, QGIS's STAC browser, a STAC API) finds
each region's maps by place and time, with their legends, sizes, checksums and the run and model that
made them.

Plain STAC 1.0 JSON dicts, saved by the catalog as JSON files under ``07_model_output/stac`` with every
href relative, so the folder moves with ``data_root`` (local or ``abfss://``): ``catalog.json``;
``regions/collection.json`` with ``regions/items/<region>.json``; ``county/collection.json`` with
``county/items/county.json``. The county mosaic has a collection of its own because its footprint covers
every region: a search by one region's box in the regions collection then finds that region alone.
Only files under ``07_model_output`` are assets: the maps and reports of ``08_reporting`` lie outside
the folder whose sizes and checksums ``output_files`` holds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from landuse_kedro.datasets.geotiff import RasterSource
from landuse_kedro.pipelines.development_inference.geo import GEOJSON_CRS, colour_table
from landuse_kedro.pipelines.development_inference.maps import PROBABILITY_CODES
from landuse_kedro.pipelines.development_inference.params import map_classes, per_region, region_names

STAC_VERSION = "1.0.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
]
STAC_FOLDER = "stac"  # stac_catalog's folder under 07_model_output (catalog_development_inference.yml)
REGIONS, COUNTY = "landuse-regions", "landuse-county"  # collection ids
KINDS = {
    "older": "Older land use (NLCD {older})",
    "predicted": "Predicted land use (NAIP {newer})",
    "smoothed": "Smoothed predicted land use (NAIP {newer})",
}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOJSON = "application/geo+json"
JSON = "application/json"
SHA256_MULTIHASH = "1220"  # multihash prefix of a sha2-256 digest (code 0x12, 32 bytes)
DENSIFY = 16  # points per side of a footprint, so its curved edges in EPSG:4326 stay close

Loaders = Mapping[str, Callable[[], Any]]


def stac_catalog(  # noqa: PLR0913, PLR0917  # every output it describes is an input: Kedro runs it after them
    output_files: Mapping[str, Mapping[str, Any]],
    region_class_rasters: Loaders,
    region_probability_rasters: Loaders,
    class_raster_mosaics: Loaders,
    probability_raster_mosaics: RasterSource,
    change_candidates: Loaders,
    development_tile_classes: pd.DataFrame,
    development_provenance: dict[str, Any],
    land_cover: dict[str, Any],
    development_inference: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Describe this run's outputs as a STAC catalog: one item per region and one for the county mosaic.

    The rasters and candidates are inputs so that Kedro runs this node after they are written, and they
    tell which files exist; only raster headers are read. Sizes and checksums come from ``output_files``,
    hashed as this node starts, so they are those of the files just written.

    Args:
        output_files: ``output_files``: path relative to 07_model_output -> ``size`` and ``sha256``.
        region_class_rasters: ``region_class_rasters`` (keys ``<region>/<kind>``).
        region_probability_rasters: ``region_probability_rasters`` (keys ``<region>``).
        class_raster_mosaics: ``class_raster_mosaics`` (keys ``<kind>``).
        probability_raster_mosaics: ``probability_raster_mosaics``.
        change_candidates: ``change_candidates`` (GeoJSON, keys ``<region>``).
        development_tile_classes: ``development_tile_classes``: the regions' tile footprints.
        development_provenance: ``development_provenance`` from ``describe_run``.
        land_cover: ``params:land_cover`` (the map classes).
        development_inference: ``params:development_inference`` (``regions``, ``older_nlcd_year``,
            ``newer_naip_year``, ``colours``, ``water``).

    Returns:
        ``stac_catalog``: document name under ``stac/`` (without ``.json``) -> STAC JSON.

    Raises:
        ValueError: A region has no tiles, or a file to describe is not in ``output_files`` (its size
            and checksum would be unknown).
    """
    classes = _classification(
        map_classes(land_cover, development_inference), development_inference["colours"]
    )
    properties = _run_properties(development_provenance, development_inference)
    years = {
        "older": development_inference["older_nlcd_year"],
        "newer": development_inference["newer_naip_year"],
    }
    regions = region_names(development_inference)
    footprints = {
        region: _footprint(region, tiles)
        for region, tiles in per_region(development_tile_classes, development_inference)
    }

    documents: dict[str, dict[str, Any]] = {}
    for region in regions:
        name = f"regions/items/{region}"
        files, sources = _region_files(
            region, region_class_rasters, region_probability_rasters, change_candidates
        )
        assets = _assets(name, files, sources, classes, output_files, years)
        crs = development_tile_classes.loc[development_tile_classes["region"] == region, "crs"].iloc[0]
        documents[name] = _item(name, region, REGIONS, footprints[region], crs, assets, properties)

    files, sources = {}, {}
    for kind in KINDS:
        if kind in class_raster_mosaics:
            files[f"{kind}_classes"] = f"county/{kind}_classes.tif"
            sources[f"{kind}_classes"] = class_raster_mosaics[kind]()
    files["probabilities"], sources["probabilities"] = "county/probabilities.tif", probability_raster_mosaics
    county = {
        "type": "MultiPolygon",
        "coordinates": [footprints[region]["coordinates"] for region in regions],
    }
    name = "county/items/county"
    assets = _assets(name, files, sources, classes, output_files, years)
    documents[name] = _item(
        name, "county", COUNTY, county, probability_raster_mosaics.crs, assets, properties
    )
    return documents | _catalog_documents(documents)


def _region_files(
    region: str,
    region_class_rasters: Loaders,
    region_probability_rasters: Loaders,
    change_candidates: Loaders,
) -> tuple[dict[str, str], dict[str, Any]]:
    """A region's asset files (key -> path under 07_model_output) and the rasters among them, opened."""
    files, sources = {}, {}
    for kind in KINDS:
        if f"{region}/{kind}" in region_class_rasters:
            files[f"{kind}_classes"] = f"regions/{region}/{kind}_classes.tif"
            sources[f"{kind}_classes"] = region_class_rasters[f"{region}/{kind}"]()
    if region in region_probability_rasters:
        files["probabilities"] = f"regions/{region}/probabilities.tif"
        sources["probabilities"] = region_probability_rasters[region]()
    if region in change_candidates:
        files["change_candidates"] = f"regions/{region}/change_candidates.geojson"
    return files, sources


def _catalog_documents(items: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The two collections (regions, county) over ``items`` and the root catalog over them. Their texts
    name no run: the items carry it (``landuse:run_id``), so two runs' catalogs differ only there."""
    return {
        "regions/collection": _collection(
            "regions/collection",
            REGIONS,
            "Land use, regions",
            "Land use of each region of the last run (its id: each item's landuse:run_id)",
            items,
        ),
        "county/collection": _collection(
            "county/collection",
            COUNTY,
            "Land use, county",
            "The mosaic of the last development_inference run's regions",
            items,
        ),
        "catalog": {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": "landuse-kedro",
            "title": "Land use maps",
            "description": "Land use maps from aerial imagery (landuse-kedro): the last run's outputs.",
            "links": [
                _link("root", "catalog", "catalog"),
                _link("child", "catalog", "regions/collection"),
                _link("child", "catalog", "county/collection"),
            ],
        },
    }


def _classification(names: Sequence[str], colours: Mapping[str, str]) -> list[dict[str, Any]]:
    """``classification:classes`` as the rasters' colour table and the QGIS legend have them."""
    palette = colour_table(names, colours)
    classes: list[dict[str, Any]] = [
        {"value": 0, "name": "nodata", "description": "no class: failed or masked tile", "nodata": True}
    ]
    for code, name in enumerate(names, start=1):
        red, green, blue = palette[code][:3]
        classes.append(
            {
                "value": code,
                "name": re.sub(r"[^0-9A-Za-z_-]", "_", name),  # the extension's pattern for names
                "title": name,
                "color_hint": f"{red:02X}{green:02X}{blue:02X}",
            }
        )
    return classes


def _run_properties(provenance: dict[str, Any], development_inference: dict[str, Any]) -> dict[str, Any]:
    """What every item says of its time span and of the run and model that made it."""
    model = provenance["model"]
    return {
        "datetime": None,  # a span: the older labels' year to the newer imagery's
        "start_datetime": f"{int(development_inference['older_nlcd_year'])}-01-01T00:00:00Z",
        "end_datetime": f"{int(development_inference['newer_naip_year'])}-12-31T23:59:59Z",
        "processing:software": {"landuse-kedro": str(provenance["project_version"])},
        "landuse:run_id": provenance["run_id"],
        "landuse:model_version": model.get("version"),
        "landuse:model_precision": model.get("precision"),
        "landuse:model_format": model.get("format"),
        "landuse:model_sha256": model.get("sha256"),
    }


def _footprint(region: str, tiles: pd.DataFrame) -> dict[str, Any]:
    """The region's tiles' outer bounds as a GeoJSON polygon in EPSG:4326, its sides densified."""
    if tiles.empty:
        raise ValueError(f"No tiles for region '{region}' in development_tile_classes.")
    (crs,) = tiles["crs"].unique()
    west, south, east, north = (
        tiles["minx"].min(),
        tiles["miny"].min(),
        tiles["maxx"].max(),
        tiles["maxy"].max(),
    )
    steps = [i / DENSIFY for i in range(DENSIFY)]
    ring = (
        [(west + (east - west) * t, south) for t in steps]
        + [(east, south + (north - south) * t) for t in steps]
        + [(east - (east - west) * t, north) for t in steps]
        + [(west, north - (north - south) * t) for t in steps]
    )
    polygon = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    moved = transform_geom(crs, GEOJSON_CRS, polygon)
    return {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in moved["coordinates"][0]]]}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    rings = geometry["coordinates"] if geometry["type"] == "Polygon" else sum(geometry["coordinates"], [])
    points = [point for ring in rings for point in ring]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _projection(crs: Any) -> dict[str, Any]:
    crs = CRS.from_user_input(crs)
    authority = crs.to_authority()
    if authority:
        return {"proj:code": ":".join(authority)}
    return {"proj:code": None, "proj:wkt2": crs.to_wkt()}


def _href(target: str, document: str) -> str:
    """``target`` (a path under 07_model_output) as seen from the STAC document named ``document``."""
    relative = posixpath.relpath(target, posixpath.dirname(f"{STAC_FOLDER}/{document}.json"))
    return relative if relative.startswith("..") else f"./{relative}"


def _link(rel: str, document: str, target: str) -> dict[str, str]:
    return {"rel": rel, "href": _href(f"{STAC_FOLDER}/{target}.json", document), "type": JSON}


def _assets(
    document: str,
    files: Mapping[str, str],
    sources: Mapping[str, RasterSource],
    classes: list[dict[str, Any]],
    output_files: Mapping[str, Mapping[str, Any]],
    years: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """The files as assets of the item ``document``: relative hrefs, sizes, checksums, bands, legends."""
    missing = [path for path in files.values() if path not in output_files]
    if missing:
        raise ValueError(f"No size and checksum for {missing} in output_files: were they written?")
    assets = {}
    for key, path in files.items():
        digest = output_files[path]
        asset: dict[str, Any] = {"href": _href(path, document), "roles": ["data"]}
        if key.endswith("_classes"):
            source = sources[key]
            asset |= {"type": COG, "title": KINDS[key.removesuffix("_classes")].format(**years)}
            asset |= _grid(source) | {"classification:classes": classes}
            asset["raster:bands"] = [{"nodata": _number(source.nodata), "data_type": source.dtypes[0]}]
        elif key == "probabilities":
            source = sources[key]
            asset |= {"type": COG, "title": "Class and change probabilities (value / 250)"} | _grid(source)
            asset["raster:bands"] = [
                {
                    "name": name,
                    "nodata": _number(source.nodata),
                    "data_type": data_type,
                    "scale": 1 / PROBABILITY_CODES,
                    "offset": 0.0,
                }
                for name, data_type in zip(source.descriptions, source.dtypes, strict=True)
            ]
        else:
            asset |= {"type": GEOJSON, "title": "Change candidates: newly developed tiles (EPSG:4326)"}
        asset |= {"file:size": digest["size"], "file:checksum": SHA256_MULTIHASH + digest["sha256"]}
        assets[key] = asset
    return assets


def _grid(source: RasterSource) -> dict[str, Any]:
    return _projection(source.crs) | {
        "proj:shape": [source.height, source.width],
        "proj:transform": [float(value) for value in list(source.transform)[:6]],
    }


def _number(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


def _item(  # noqa: PLR0913, PLR0917
    document: str,
    item_id: str,
    collection: str,
    geometry: dict[str, Any],
    crs: Any,
    assets: dict[str, dict[str, Any]],
    properties: dict[str, Any],
) -> dict[str, Any]:
    collection_document = document.split("/", 1)[0] + "/collection"
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": item_id,
        "collection": collection,
        "geometry": geometry,
        "bbox": _bbox(geometry),
        "properties": {"title": f"Land use, {item_id}", **properties, **_projection(crs)},
        "links": [
            _link("root", document, "catalog"),
            _link("parent", document, collection_document),
            _link("collection", document, collection_document),
        ],
        "assets": assets,
    }


def _collection(
    document: str, collection_id: str, title: str, description: str, documents: Mapping[str, Any]
) -> dict[str, Any]:
    folder = document.split("/", 1)[0]
    items = {name: item for name, item in documents.items() if name.startswith(f"{folder}/items/")}
    boxes = [item["bbox"] for item in items.values()]
    properties = next(iter(items.values()))["properties"]  # every item has the run's span and id
    union = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id,
        "title": title,
        "description": description,
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [union]},
            "temporal": {"interval": [[properties["start_datetime"], properties["end_datetime"]]]},
        },
        "links": [_link("root", document, "catalog"), _link("parent", document, "catalog")]
        + [_link("item", document, name) for name in items],
        "summaries": {"landuse:run_id": [properties["landuse:run_id"]]},
    }
