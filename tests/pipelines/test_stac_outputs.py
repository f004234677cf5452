"""The STAC catalog of a development_inference run: it opens in pystac, every asset href names the file
whose size and checksum it gives, the legend is the QGIS one, and a STAC API (``rustac serve``) serving
the items finds a region by its box. Runs on the two synthetic regions of test_development_inference."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import fsspec
import pystac
import pytest
import rasterio
from pystac_client import Client
from rasterio.warp import transform_bounds

from landuse_kedro.datasets import FileDigestsDataset
from landuse_kedro.pipelines.development_inference.stac import COUNTY, REGIONS, stac_catalog
from tests.pipelines.test_development_inference import _load, region_run  # noqa: F401  # the fixture
from tests.stac_server import stac_api

pytestmark = pytest.mark.slow
REGION_ASSETS = {
    "older_classes",
    "predicted_classes",
    "smoothed_classes",
    "probabilities",
    "change_candidates",
}
COUNTY_ASSETS = {"older_classes", "predicted_classes", "smoothed_classes", "probabilities"}


def _stac(project: Path) -> Path:
    return project / "data/07_model_output/stac"


def _items(project: Path) -> dict[str, pystac.Item]:
    catalog = pystac.Catalog.from_file(str(_stac(project) / "catalog.json"))
    return {f"{item.collection_id}/{item.id}": item for item in catalog.get_items(recursive=True)}


def test_the_catalog_walks_to_each_region_and_the_county_with_the_run_and_model(region_run):  # noqa: F811
    catalog = pystac.Catalog.from_file(str(_stac(region_run) / "catalog.json"))
    assert sorted(child.id for child in catalog.get_children()) == [COUNTY, REGIONS]
    items = _items(region_run)
    assert sorted(items) == [f"{COUNTY}/county", f"{REGIONS}/otherville", f"{REGIONS}/testville"]
    (version,) = [path.name for path in (region_run / "data/06_models/scoring_model.onnx").iterdir()]
    run_id = _load(region_run, "development_agreement", "testville")["run_id"]
    for item in items.values():
        props = item.properties
        assert item.datetime is None
        assert (props["start_datetime"][:4], props["end_datetime"][:4]) == ("2011", "2016")
        assert props["landuse:run_id"] == run_id
        assert (props["landuse:model_version"], props["landuse:model_precision"]) == (version, "int8")
        assert set(props["processing:software"]) == {"landuse-kedro"}
        assert props["proj:code"] == ("EPSG:5070" if item.id == "county" else "EPSG:26919")
        assert all(uri.startswith("https://stac-extensions.github.io/") for uri in item.stac_extensions)
        written = json.loads(Path(item.get_self_href()).read_text())["links"]
        assert sorted(link["rel"] for link in written) == ["collection", "parent", "root"]
        assert all(link["href"].startswith("../") for link in written), written
    assert set(items[f"{REGIONS}/testville"].assets) == REGION_ASSETS
    assert set(items[f"{COUNTY}/county"].assets) == COUNTY_ASSETS


def test_every_asset_href_is_relative_and_names_a_file_with_that_size_and_checksum(region_run):  # noqa: F811
    checked = 0
    for item in _items(region_run).values():
        item_file = Path(item.get_self_href())
        raw = json.loads(item_file.read_text())  # as written: pystac makes hrefs absolute once read
        for key, asset in item.assets.items():
            href = raw["assets"][key]["href"]
            assert not href.startswith("/") and "://" not in href, href
            path = (item_file.parent / href).resolve()
            assert path.is_file(), href
            assert path.is_relative_to((region_run / "data/07_model_output").resolve())
            content = path.read_bytes()
            assert asset.extra_fields["file:size"] == len(content), href
            assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(content).hexdigest(), href
            checked += 1
    assert checked == 2 * len(REGION_ASSETS) + len(COUNTY_ASSETS)


def test_the_footprints_are_the_rasters_bounds_in_wgs84(region_run):  # noqa: F811
    items = _items(region_run)
    for region in ("testville", "otherville"):
        with rasterio.open(
            region_run / f"data/07_model_output/regions/{region}/predicted_classes.tif"
        ) as raster:
            expected = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
        assert items[f"{REGIONS}/{region}"].bbox == pytest.approx(expected, abs=1e-7)
    county = items[f"{COUNTY}/county"].bbox
    testville, otherville = items[f"{REGIONS}/testville"].bbox, items[f"{REGIONS}/otherville"].bbox
    assert county == pytest.approx([*testville[:2], *otherville[2:]], abs=1e-9)  # otherville lies east


def test_the_legend_and_bands_are_those_of_the_rasters_and_the_qgis_style(region_run):  # noqa: F811
    asset = _items(region_run)[f"{REGIONS}/testville"].assets["predicted_classes"].extra_fields
    qml = (region_run / "data/07_model_output/regions/testville/predicted_classes.qml").read_text()
    legend = [
        {"value": int(value), "title": label, "color_hint": colour.upper()}
        for value, colour, label in re.findall(r'value="(\d+)" color="#(\w{6})"[^>]*label="([^"]+)"', qml)
    ]
    assert len(legend) == 3
    classes = asset["classification:classes"]
    assert [{key: c[key] for key in ("value", "title", "color_hint")} for c in classes[1:]] == legend
    assert classes[0] == {**classes[0], "value": 0, "nodata": True}
    assert asset["raster:bands"] == [{"nodata": 0, "data_type": "uint8"}]
    probabilities = _items(region_run)[f"{REGIONS}/testville"].assets["probabilities"].extra_fields
    with rasterio.open(region_run / "data/07_model_output/regions/testville/probabilities.tif") as raster:
        names, scales = list(raster.descriptions), list(raster.scales)
    assert [band["name"] for band in probabilities["raster:bands"]] == names
    assert [band["scale"] for band in probabilities["raster:bands"]] == pytest.approx(scales)
    assert {band["nodata"] for band in probabilities["raster:bands"]} == {255}


def test_a_search_by_a_regions_box_finds_that_region_alone(region_run, tmp_path):  # noqa: F811
    stac = _stac(region_run)
    items = [json.loads(path.read_text()) for path in sorted(stac.glob("*/items/*.json"))]
    boxes = {item["id"]: item["bbox"] for item in items}
    with stac_api(items, tmp_path / "api") as url:
        client = Client.open(url)
        for region in ("testville", "otherville"):
            found = client.search(bbox=boxes[region], collections=[REGIONS]).item_collection()
            assert [item.id for item in found] == [region]
        everywhere = client.search(bbox=boxes["testville"]).item_collection()
        assert sorted(item.id for item in everywhere) == ["county", "testville"]  # why the county has its own


def test_a_file_without_a_checksum_is_refused_not_described(region_run):  # noqa: F811
    names = [
        "output_files",
        "region_class_rasters",
        "region_probability_rasters",
        "class_raster_mosaics",
        "probability_raster_mosaics",
        "change_candidates",
        "development_tile_classes",
    ]
    inputs = {name: _load(region_run, name) for name in names}
    params = _load(region_run, "parameters")
    provenance = {"run_id": "r1", "project_version": "0", "model": {"version": "v", "precision": "int8"}}
    args = dict(
        **inputs,
        development_provenance=provenance,
        land_cover=params["land_cover"],
        development_inference=params["development_inference"],
    )
    documents = stac_catalog(**args)  # pure: the same inputs give the catalog
    assert documents["regions/items/testville"]["properties"]["landuse:run_id"] == "r1"
    del args["output_files"]["regions/testville/probabilities.tif"]
    with pytest.raises(ValueError, match=r"regions/testville/probabilities\.tif"):
        stac_catalog(**args)


def test_file_digests_skip_hidden_staged_and_excluded_entries_on_any_filesystem():
    fs = fsspec.filesystem("memory")
    files = {
        "out/regions/a/map.tif": b"abc",
        "out/regions/a/map.tif.staging-1@host-0123abcd": b"half",
        "out/regions/a/_SUCCESS": b"",
        "out/.run.lock": b"",
        "out/stac/catalog.json": b"{}",
        "out/big.parquet/part-0.parquet": b"x" * 10,
        "out/big.parquet.md": b"kept: only the folder named is excluded",
    }
    for path, content in files.items():
        fs.pipe(f"/{path}", content)
    digests = FileDigestsDataset(path="memory://out", exclude=["stac", "big.parquet"]).load()
    assert digests == {
        "big.parquet.md": {
            "size": len(files["out/big.parquet.md"]),
            "sha256": hashlib.sha256(files["out/big.parquet.md"]).hexdigest(),
        },
        "regions/a/map.tif": {"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
    }
    assert FileDigestsDataset(path="memory://nothing-here").load() == {}
