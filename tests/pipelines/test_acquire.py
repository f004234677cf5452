"""acquire against a real STAC API (rustac serve) and COGs served with HTTP range requests, offline.

The sample scene is cut into overlapping quarter quads, written as COGs and catalogued as `naip`
items; NLCD is one COG per edition (2011 by URL, 2016 as a STAC item). The acquire pipeline must
rebuild the original scenes exactly, so data_preparation on its output equals data_preparation on
the originals; it must read NLCD by windows only, skip what is present, and fail clearly.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.acquire.mosaic import mosaic_naip
from landuse_kedro.pipelines.acquire.regions import parse_years, region_bbox
from landuse_kedro.pipelines.acquire.report import summarise_acquisition
from landuse_kedro.pipelines.acquire.stac import search_naip
from tests.helpers import free_port, make_project_copy, registered_pipelines, run_pipeline
from tests.stac_server import RangeFileServer, stac_api

YEARS = (2012, 2016)
OVERLAP = 16  # px shared by neighbouring quads


def _item(item_id: str, collection: str, local: Path, href: str, year: int, asset: str) -> dict:
    with rasterio.open(local) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "bbox": [west, south, east, north],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        "properties": {"datetime": f"{year}-07-01T00:00:00Z"},
        "links": [],
        "assets": {asset: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}},
    }


def _cut_quads(scene: Path, out: Path) -> list[Path]:
    """Four overlapping COGs from one scene (the way NAIP quarter quads overlap)."""
    paths = []
    with rasterio.open(scene) as src:
        half_w, half_h = src.width // 2, src.height // 2
        for i, (col0, row0) in enumerate(
            [(0, 0), (half_w - OVERLAP, 0), (0, half_h - OVERLAP), (half_w - OVERLAP, half_h - OVERLAP)]
        ):
            w = Window(
                col0, row0, min(half_w + OVERLAP, src.width - col0), min(half_h + OVERLAP, src.height - row0)
            )
            profile = {
                **src.profile,
                "width": int(w.width),
                "height": int(w.height),
                "transform": src.window_transform(w),
                "alpha": "unspecified",
            }  # NIR is no alpha
            staged = out / f"{scene.stem}_q{i}.gtiff"
            with rasterio.open(staged, "w", **profile) as dst:
                dst.write(src.read(window=w))
                dst.descriptions = src.descriptions
            path = out / f"{scene.stem}_q{i}.tif"
            rasterio.shutil.copy(staged, path, driver="COG", compress="deflate", blocksize=128)
            staged.unlink()
            paths.append(path)
    return paths


def _conus_like(nlcd: Path, out: Path, seed: int, pad: int = 1500) -> None:
    """The sample NLCD inside a much larger COG whose extra land is random codes (incompressible,
    as a real CONUS NLCD is), so reading the whole file would show in the bytes sent."""
    with rasterio.open(nlcd) as src:
        codes = np.random.default_rng(seed).choice(
            np.array([21, 41, 52, 71, 81], np.uint8), (src.height + 2 * pad, src.width + 2 * pad)
        )
        codes[pad : pad + src.height, pad : pad + src.width] = src.read(1)
        profile = {
            **src.profile,
            "driver": "GTiff",
            "width": codes.shape[1],
            "height": codes.shape[0],
            "transform": src.transform @ Affine.translation(-pad, -pad),
        }
        colormap = src.colormap(1)
    staged = out.with_suffix(".gtiff")
    with rasterio.open(staged, "w", **profile) as dst:
        dst.write_colormap(1, colormap)
        dst.write(codes[None])
    rasterio.shutil.copy(staged, out, driver="COG", compress="deflate", blocksize=256)
    staged.unlink()


@pytest.fixture(scope="module")
def acquired(tmp_path_factory):
    """Originals (sample_scene + data_preparation), the served catalog, and a second project
    filled by `kedro run --pipeline acquire` then data_preparation."""
    root = tmp_path_factory.mktemp("acquire")
    original = make_project_copy(root / "original")
    run_pipeline(original, "sample_scene")
    run_pipeline(original, "data_preparation")
    raw = original / "data" / "01_raw"

    served = root / "served"
    (served / "naip").mkdir(parents=True)
    (served / "nlcd").mkdir()
    for year in (2011, 2016):
        _conus_like(raw / "nlcd" / f"nlcd_{year}.tif", served / "nlcd" / f"nlcd_{year}.tif", year)
    boxes = {}
    with RangeFileServer(served) as files:
        items = []
        for scene in sorted((raw / "naip").glob("*.tif")):
            region, year = scene.stem.rsplit("_", 1)
            with rasterio.open(scene) as src:
                west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            pad = 0.002  # the box is a little larger than the scene; the quads clip it
            # as the command line gives it (README): numbers separated by spaces
            boxes[region] = " ".join(f"{v:.6f}" for v in (west - pad, south - pad, east + pad, north + pad))
            for quad in _cut_quads(scene, served / "naip"):
                items.append(
                    _item(quad.stem, "naip", quad, f"{files.url}/naip/{quad.name}", int(year), "image")
                )
        items.append(
            _item(
                "nlcd-2016",
                "nlcd",
                served / "nlcd" / "nlcd_2016.tif",
                f"{files.url}/nlcd/nlcd_2016.tif",
                2016,
                "data",
            )
        )
        with stac_api(items, root / "stac") as stac_url:
            params = {
                "acquire": {
                    "stac_url": stac_url,
                    "sign": None,
                    "trust": {"schemes": ["http"], "hosts": ["127.0.0.1"]},  # the local servers
                    "regions": boxes,
                    "years": " ".join(map(str, YEARS)),
                    "nlcd": {
                        "margin": 1000,
                        "editions": {
                            2011: {"href": f"{files.url}/nlcd/nlcd_2011.tif"},
                            2016: {"collection": "nlcd", "item": "nlcd-2016", "asset": "data"},
                        },
                    },
                }
            }
            project = make_project_copy(root / "acquired")
            started = time.perf_counter()
            run_pipeline(project, "acquire", params=params)
            fetch_s = time.perf_counter() - started
            first_sent, first_requests = dict(files.sent), sum(files.requests.values())
            first_mtimes = {p: p.stat().st_mtime_ns for p in (project / "data" / "01_raw").rglob("*.tif")}
            run_pipeline(project, "acquire", params=params)  # again: everything is present
            second_sent = dict(files.sent)
            yield {
                "original": original,
                "project": project,
                "served": served,
                "stac_url": stac_url,
                "params": params["acquire"],
                "fetch_s": fetch_s,
                "first_sent": first_sent,
                "requests": first_requests,
                "second_sent": second_sent,
                "first_mtimes": first_mtimes,
            }


@pytest.fixture(scope="module")
def prepared(acquired):
    run_pipeline(acquired["project"], "data_preparation")
    return acquired


def test_mosaics_rebuild_the_original_scenes_exactly(acquired):
    originals = sorted((acquired["original"] / "data" / "01_raw" / "naip").glob("*.tif"))
    assert len(originals) == 8  # 4 regions x 2 years in the test environment
    for original in originals:
        fetched = acquired["project"] / "data" / "01_raw" / "naip" / original.name
        with rasterio.open(original) as a, rasterio.open(fetched) as b:
            assert (b.crs, b.transform, b.shape, b.count) == (a.crs, a.transform, a.shape, a.count)
            np.testing.assert_array_equal(b.read(), a.read())
            assert b.descriptions == a.descriptions
            assert b.tags()["NAIP_ITEMS"].count(original.stem) == 4  # made of its 4 quads


def test_nlcd_is_read_by_windows_never_whole(acquired):
    """Range requests only: fewer bytes than the file, and the windows hold the original codes."""
    sent, served = acquired["first_sent"], acquired["served"]
    for year in (2011, 2016):
        name = f"nlcd/nlcd_{year}.tif"
        size = (served / name).stat().st_size
        assert 0 < sent[name] < size / 2, (name, sent[name], size)
        with (
            rasterio.open(acquired["project"] / "data" / "01_raw" / "nlcd" / f"nlcd_{year}.tif") as got,
            rasterio.open(served / name) as full,
        ):
            assert got.crs == full.crs and got.res == full.res
            assert got.width * got.height < full.width * full.height
            codes = got.read(1)
            for name, box in acquired["params"]["regions"].items():  # each region's window: the served codes
                west, south, east, north = transform_bounds(
                    "EPSG:4326", full.crs, *region_bbox(box, name), densify_pts=21
                )
                here = got.window(west, south, east, north).round_offsets().round_lengths()
                there = full.window(west, south, east, north).round_offsets().round_lengths()
                region = codes[
                    here.row_off : here.row_off + here.height, here.col_off : here.col_off + here.width
                ]
                assert region.shape == (there.height, there.width) and (region > 0).any()
                np.testing.assert_array_equal(region, full.read(1, window=there))
            assert (codes == 0).mean() > 0.5  # the land between the regions' windows was never read
            assert got.colormap(1)[21] == full.colormap(1)[21]
    naip = {k: v for k, v in sent.items() if k.startswith("naip/")}
    naip_size = sum(p.stat().st_size for p in (served / "naip").glob("*.tif"))
    nlcd = sum(v for k, v in sent.items() if k.startswith("nlcd/"))
    nlcd_size = sum(p.stat().st_size for p in (served / "nlcd").glob("*.tif"))
    print(
        f"\nacquire figures: fetch {acquired['fetch_s']:.1f} s; NAIP {sum(naip.values())} bytes read of "
        f"{naip_size} served ({len(naip)} COGs); NLCD {nlcd} bytes read of {nlcd_size}; "
        f"{acquired['requests']} GET requests"
    )


def test_second_run_fetches_nothing(acquired):
    assert acquired["first_sent"]  # the first run did read over HTTP
    assert acquired["second_sent"] == acquired["first_sent"]
    mtimes = {p: p.stat().st_mtime_ns for p in (acquired["project"] / "data" / "01_raw").rglob("*.tif")}
    assert mtimes == acquired["first_mtimes"] and len(mtimes) == 10


def test_data_preparation_on_acquired_equals_originals(prepared):
    original, acquired = prepared["original"] / "data", prepared["project"] / "data"
    for name in ("02_intermediate/tile_candidates.parquet", "05_model_input/tile_manifest.parquet"):
        a, b = pd.read_parquet(original / name), pd.read_parquet(acquired / name)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a.drop(columns=_paths(a)), b.drop(columns=_paths(b)))
    tiles = sorted(
        p.relative_to(original / "05_model_input") for p in (original / "05_model_input").rglob("*.png")
    )
    assert len(tiles) > 20
    assert tiles == sorted(
        p.relative_to(acquired / "05_model_input") for p in (acquired / "05_model_input").rglob("*.png")
    )
    for tile in tiles:
        assert (original / "05_model_input" / tile).read_bytes() == (
            acquired / "05_model_input" / tile
        ).read_bytes()
    report = json.loads((acquired / "08_reporting" / "acquire_report.json").read_text())
    assert report["fetched"] == {}  # the last run found everything present
    assert len(report["already_present"]) == 8


def _paths(frame: pd.DataFrame) -> list[str]:
    """Columns holding file locations (they name each project's own folder)."""
    return [
        c for c in frame.columns if frame[c].dtype == object and frame[c].astype(str).str.contains("/").any()
    ]


def test_unreachable_api_is_named():
    closed = f"http://127.0.0.1:{free_port()}"
    params = {
        "stac_url": closed,
        "collection": "naip",
        "asset": "image",
        "regions": {"x": [-71, 42, -70.9, 42.1]},
        "years": [2016],
        "timeout_s": 5,
        "trust": TRUSTED,
    }
    with pytest.raises(ConnectionError, match=f"STAC API at {closed} is unreachable"):
        search_naip(params, FileIndex(()))


def test_no_item_for_box_and_year_is_named(acquired):
    params = {**acquired["params"], "collection": "naip", "asset": "image", "years": [1999]}
    with pytest.raises(LookupError, match=r"no 'naip' item .* over essex's box .* in 1999"):
        search_naip(params, FileIndex(()))
    far = {**params, "years": [2016], "regions": {"nowhere": [10.0, 10.0, 10.1, 10.1]}}
    with pytest.raises(LookupError, match=r"nowhere's box \[10.0, 10.0, 10.1, 10.1\]"):
        search_naip(far, FileIndex(()))


def test_never_part_of_the_default_run():
    pipelines = registered_pipelines()
    fetched = {"naip_scenes", "nlcd_rasters", "acquire_report"}
    assert fetched <= pipelines["acquire"].all_outputs()
    assert not fetched & pipelines["__default__"].all_outputs()


def test_boxes_and_years_as_the_command_line_gives_them():
    """`--params` splits on commas, so boxes and years come as numbers separated by spaces."""
    assert region_bbox("-71.55 42.40 -71.25 42.57", "m") == [-71.55, 42.40, -71.25, 42.57]
    assert parse_years("2016 2012") == [2012, 2016] and parse_years(2016) == [2016]
    with pytest.raises(ValueError, match=r"acquire.regions.m must be \[min_lon"):
        region_bbox("42.4 -71.55 42.57 -71.25 1", "m")


def test_an_unreadable_cog_is_named_without_its_token():
    from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy

    secret = "sig=s3cr3t-token"
    signed = f"http://127.0.0.1:{free_port()}/naip/x.tif?{secret}"
    policy = HrefPolicy.from_params({"trust": TRUSTED, "timeout_s": 5})
    with pytest.raises(
        ConnectionError, match=r"Cannot read the NAIP quad http://127.0.0.1:\d+/naip/x.tif"
    ) as caught:
        with policy.env(), policy.open(signed, lambda href: href, "the NAIP quad"):
            pass
    assert "s3cr3t" not in str(caught.value) and caught.value.__suppress_context__


def test_quads_in_two_utm_zones_are_warped_onto_one_grid(tmp_path, caplog):
    """Two quads in zone 19N, one in 18N: the mosaic takes the majority's CRS, warps the other,
    and declares the 0 it fills between them with (the quads declare no nodata, as NAIP) as nodata."""
    from rasterio.warp import transform as transform_points

    x0, y0 = (v[0] for v in transform_points("EPSG:4326", "EPSG:26919", [-72.0], [42.3]))
    x0, y0 = round(x0), round(y0)
    cx, cy = (v[0] for v in transform_points("EPSG:26919", "EPSG:26918", [x0], [y0 - 200]))
    quads = {
        "a": ("EPSG:26919", x0, y0, 50),
        "b": ("EPSG:26919", x0 + 200, y0, 100),
        "c": ("EPSG:26918", round(cx), round(cy), 150),
    }
    with RangeFileServer(tmp_path) as files:  # served: acquire reads no local path
        items = []
        for name, (crs, left, top, value) in quads.items():
            path = tmp_path / f"{name}.tif"
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=200,
                height=200,
                count=4,
                dtype="uint8",
                crs=crs,
                transform=Affine(1, 0, left, 0, -1, top),
                alpha="unspecified",
            ) as dst:
                dst.write(np.full((4, 200, 200), value, np.uint8))
            items.append({"id": name, "href": f"{files.url}/{name}.tif"})
        acquire = {
            "regions": {"r": [-72.1, 42.2, -71.9, 42.4]},
            "sign": None,
            "block_rows": 64,
            "trust": TRUSTED,
        }
        mosaic = mosaic_naip({"r_2016": items}, acquire)[0]["r_2016"]
        assert mosaic.crs.to_epsg() == 26919
        dx, dy = x0 - mosaic.transform.c, mosaic.transform.f - y0  # the warped quad reaches west of a
        assert dx == int(dx) >= 0 and dy == 0  # on the first quad's pixel grid
        dx = int(dx)
        image = np.zeros((4, mosaic.height, mosaic.width), np.uint8)
        with caplog.at_level("WARNING"):
            for window, block in mosaic.blocks():
                image[:, window.row_off : window.row_off + window.height, :] = block
        assert (image[:, :200, dx : dx + 200] == 50).all() and (
            image[:, :200, dx + 200 : dx + 400] == 100
        ).all()
        assert (image[0, 200:400, dx : dx + 200] == 150).mean() > 0.9  # the zone-18 quad, warped below a
        assert set(np.unique(image)) <= {0, 50, 100, 150}  # nearest neighbour: no blended values
        assert mosaic.nodata == 0 and (image[:, 200:400, dx + 200 :] == 0).all()  # no quad south-east
        assert mosaic_naip({"r_2016": items}, {**acquire, "nodata": 255})[0]["r_2016"].nodata == 255


# ------------------------------------------------------------------ hostile servers (issue 27)
# Every server is on 127.0.0.1 and every wait is bounded: a run that would hang is given a
# deadline in a thread, and its server is closed afterwards, which releases it.

TRUSTED = {"schemes": ["http"], "hosts": ["127.0.0.1"]}  # the tests' servers, listed as a user would
BOX = [-72.0, 42.25, -71.98, 42.27]  # lon/lat, in UTM zone 19N (EPSG:26919)
PLANTED = b"PLANTED-LOCAL-BYTES-" * 64


def _utm_origin() -> tuple[float, float]:
    from rasterio.warp import transform as transform_points

    x, y = (v[0] for v in transform_points("EPSG:4326", "EPSG:26919", [BOX[0]], [BOX[3]]))
    return float(round(x)), float(round(y))


def _quad(path: Path, left: float, top: float, res: float = 1.0, size: int = 512, seed: int = 0) -> Path:
    """A 4-band COG of random bytes (incompressible: its tiles lie well past the header)."""
    staged = path.with_suffix(".gtiff")
    with rasterio.open(
        staged,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint8",
        crs="EPSG:26919",
        transform=Affine(res, 0, left, 0, -res, top),
        alpha="unspecified",
    ) as dst:
        dst.write(np.random.default_rng(seed).integers(1, 255, (4, size, size), np.uint8))
    rasterio.shutil.copy(staged, path, driver="COG", blocksize=128)
    staged.unlink()
    return path


def _plain_item(item_id: str, href: str, year: int) -> dict:
    west, south, east, north = BOX
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "naip",
        "bbox": BOX,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        "properties": {"datetime": f"{year}-07-01T00:00:00Z"},
        "links": [],
        "assets": {"image": {"href": href, "type": "image/tiff; application=geotiff"}},
    }


def _params(stac_url: str, year: int, **extra) -> dict:
    return {
        "stac_url": stac_url,
        "collection": "naip",
        "asset": "image",
        "sign": None,
        "regions": {"box": BOX},
        "years": [year],
        "timeout_s": 5,
        "trust": TRUSTED,
        **extra,
    }


def _fetch(params: dict, raw: Path) -> None:
    """search_naip, mosaic_naip and the save to 01_raw/naip, as the pipeline does."""
    from landuse_kedro.datasets import GeoTiffDataset

    found = search_naip(params, FileIndex(()))
    mosaics = mosaic_naip(found, params)[0]
    for key, mosaic in mosaics.items():
        GeoTiffDataset(filepath=str(raw / f"{key}.tif")).save(mosaic)


def _holds_planted(folder: Path) -> bool:
    """Whether any raster under ``folder`` has the planted bytes among its pixels."""
    for path in folder.rglob("*.tif"):
        with rasterio.open(path) as src:
            if PLANTED[:200] in src.read().tobytes():
                return True
    return False


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A real STAC API whose items for each year hold one kind of hostile href, a range server
    for the assets, and a planted local file that must never be read."""
    root = tmp_path_factory.mktemp("hostile")
    planted = root / "planted.txt"
    planted.write_bytes(PLANTED * 16)
    served = root / "served"
    (served / "naip").mkdir(parents=True)
    left, top = _utm_origin()
    good = _quad(served / "naip" / "good.tif", left, top)
    # a VRT served as a GeoTIFF: its raw bands are the planted local file
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativeToVRT="0">{planted}</SourceFilename><ImageOffset>0</ImageOffset>'
        "<PixelOffset>1</PixelOffset><LineOffset>64</LineOffset></VRTRasterBand>"
        for b in range(1, 5)
    )
    (served / "naip" / "quad.tif").write_text(
        f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:26919</SRS>'
        f"<GeoTransform>{left}, 1, 0, {top}, 0, -1</GeoTransform>{bands}</VRTDataset>"
    )
    files = RangeFileServer(served)
    files.redirects = {  # an allowed host sending GDAL elsewhere: to a host not allowed, and to itself
        "naip/moved.tif": f"http://localhost:{files.port}/naip/good.tif",
        "naip/renamed.tif": "/naip/good.tif",
    }
    with files, RangeFileServer(served, refuse_from=20_000) as expiring:
        hrefs = {
            2001: f"{files.url}/naip/quad.tif",  # VRT in disguise
            2002: f"file://{good}",
            2003: str(good),  # a local path
            2004: f"/vsicurl/{files.url}/naip/good.tif",
            2005: f"http://localhost:{files.port}/naip/good.tif",  # a host not allowed
            2006: f"{expiring.url}/naip/good.tif?se=2031-01-01&sig=S3CR3T-SIGNATURE",  # 403 after the header
            2007: f"{files.url}/naip/moved.tif",  # 302 to a host not allowed
            2008: f"{files.url}/naip/renamed.tif",  # 302 to an allowed href
        }
        items = [_plain_item(f"item-{year}", href, year) for year, href in hrefs.items()]
        with stac_api(items, root / "stac") as stac_url:
            yield {"root": root, "planted": planted, "stac_url": stac_url, "files": files, "good": good}


def test_hrefs_outside_the_trust_policy_are_refused_naming_the_item(hostile, tmp_path):
    """VRT in disguise, file:, a local path, /vsicurl/ and a host not allowed: each refused, naming
    the item, and no byte of the planted file reaches 01_raw."""
    vrt, control = f"{hostile['files'].url}/naip/quad.tif", tmp_path / "control"
    control.mkdir()
    with (
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_TIMEOUT="5"),
        rasterio.open(vrt) as src,
    ):
        assert PLANTED[:200] in src.read().tobytes()  # GDAL left to itself reads the planted file
        with rasterio.open(control / "copy.tif", "w", **{**src.profile, "driver": "GTiff"}) as dst:
            dst.write(src.read())
    assert _holds_planted(control)  # the check below sees planted bytes in a saved raster
    for year, why in {
        2001: "not a GeoTIFF",
        2002: "scheme 'file' is not allowed",
        2003: "a local path",
        2004: "a GDAL virtual file system path",
        2005: "host 'localhost' is not in acquire.trust.hosts",
    }.items():
        raw = tmp_path / str(year)
        raw.mkdir()
        with pytest.raises(ValueError, match=rf"item-{year}\b.*{why}") as refused:
            _fetch(_params(hostile["stac_url"], year), raw)
        assert str(hostile["planted"]) not in str(refused.value)
        assert not list(raw.rglob("*.tif")) and not _holds_planted(raw)


def test_a_redirect_is_checked_like_the_href_it_replaces(hostile, tmp_path):
    """GDAL's HTTP client follows redirects: an allowed host could send it to any address. acquire
    reads hrefs itself and checks where each redirect leads."""
    files, moved = hostile["files"], f"{hostile['files'].url}/naip/moved.tif"
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(moved) as followed:
        assert followed.width == 512  # GDAL left to itself follows the 302 to the host not allowed
    before = files.requests["naip/good.tif"]
    raw = tmp_path / "2007"
    raw.mkdir()
    with pytest.raises(ValueError, match=r"item-2007\b.*host 'localhost' is not in acquire\.trust\.hosts"):
        _fetch(_params(hostile["stac_url"], 2007), raw)
    assert files.requests["naip/moved.tif"] >= 1 and files.requests["naip/good.tif"] == before
    assert not list(raw.rglob("*.tif"))
    raw = tmp_path / "2008"
    raw.mkdir()
    _fetch(_params(hostile["stac_url"], 2008), raw)  # a redirect the policy allows is followed
    with rasterio.open(next(raw.rglob("*.tif"))) as got, rasterio.open(hostile["good"]) as want:
        assert np.array_equal(got.read(list(range(1, 5))), want.read())


def test_a_signed_href_failing_mid_read_never_appears_in_the_output(hostile, tmp_path):
    """`kedro run` on a host that answers 403 once the header is read: the failure names the quad
    (the log shows its path) but the signature appears nowhere in what Kedro prints."""
    import subprocess
    import sys

    import yaml

    project = make_project_copy(tmp_path / "project")
    params = _params(hostile["stac_url"], 2006, nlcd={"editions": {}})
    (project / "conf" / "test" / "parameters_acquire.yml").write_text(yaml.safe_dump({"acquire": params}))
    kedro = Path(sys.executable).parent / "kedro"
    run = subprocess.run(
        [str(kedro), "run", "--env", "test", "--pipelines", "acquire", "--nodes", "search_naip,mosaic_naip"],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "250"},
    )
    output = run.stdout + run.stderr
    (tmp_path / "kedro_output.txt").write_text(output)  # to read when it fails
    assert run.returncode != 0
    assert "item-2006" in output and "good.tif" in output, output[-3000:]  # it sees the item and its href
    assert "S3CR3T" not in output and "sig=" not in output, output[-3000:]
    assert not list((project / "data" / "01_raw").rglob("*.tif"))


def test_a_host_that_never_answers_fails_within_the_timeout(tmp_path):
    import threading

    from tests.stac_server import SilentServer

    params = {"regions": {"box": BOX}, "sign": None, "trust": TRUSTED, "timeout_s": 2, "retries": 1}
    outcome: dict = {}

    def mosaic() -> None:
        started = time.perf_counter()
        try:
            mosaic_naip({"box_2016": [{"id": "silent", "href": f"{silent.url}/q.tif"}]}, params)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error
        outcome["s"] = time.perf_counter() - started

    with SilentServer() as silent:
        worker = threading.Thread(target=mosaic, daemon=True)
        worker.start()
        worker.join(timeout=30)
        hung = worker.is_alive()
    worker.join(timeout=30)  # released by the closed connections
    assert not hung, "mosaic_naip still waiting on a host that never answers after 30 s"
    assert isinstance(outcome.get("error"), ConnectionError) and "silent" in str(outcome["error"])
    assert outcome["s"] < 2 * (1 + 1) + 1 + 5, outcome  # timeout x (1 + retries) + delay + slack


def test_an_endless_search_stops_at_the_cap(tmp_path):
    """An API whose /search always links another page: the search stops at acquire.max_items."""
    import threading

    served = tmp_path / "api"
    served.mkdir()
    with RangeFileServer(served) as api:
        landing = {
            "type": "Catalog",
            "id": "endless",
            "description": "a STAC API that never stops paging",
            "stac_version": "1.0.0",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
            ],
            "links": [
                {"rel": "self", "href": f"{api.url}/stac", "type": "application/json"},
                {"rel": "root", "href": f"{api.url}/stac", "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{api.url}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }
        page = {
            "type": "FeatureCollection",
            "features": [_plain_item("again", f"{api.url}/naip/q.tif", 2016)],
            "links": [{"rel": "next", "href": f"{api.url}/search?page=next", "method": "GET"}],
        }
        (served / "stac").write_text(json.dumps(landing))
        (served / "search").write_text(json.dumps(page))
        outcome: dict = {}

        def search() -> None:
            try:
                search_naip(_params(f"{api.url}/stac", 2016, max_items=20), FileIndex(()))
            except Exception as error:  # noqa: BLE001 - the test inspects it
                outcome["error"] = error

        worker = threading.Thread(target=search, daemon=True)
        worker.start()
        worker.join(timeout=30)
        hung = worker.is_alive()
        pages = api.requests["search"]
    worker.join(timeout=30)
    assert not hung, f"the search was still paging after 30 s ({pages} pages)"
    assert pages <= 21  # the cap, plus the page that passed it
    assert isinstance(outcome.get("error"), RuntimeError)
    assert re.search(r"more than 20 items .*box.*2016.*acquire\.max_items", str(outcome["error"])), outcome


def test_a_stac_api_redirect_to_a_host_not_allowed_is_refused(tmp_path):
    """The STAC client follows redirects too: each one is checked before it is followed."""
    import urllib.request

    served = tmp_path / "api"
    served.mkdir()
    (served / "landing").write_text("{}")
    api = RangeFileServer(served)
    api.redirects = {"stac": f"http://localhost:{api.port}/landing"}
    with api:
        with urllib.request.urlopen(f"{api.url}/stac", timeout=5) as followed:
            assert followed.read() == b"{}"  # a client left to itself lands on the host not allowed
        with pytest.raises(ValueError, match=r"STAC API redirect.*host 'localhost' is not in acquire"):
            search_naip(_params(f"{api.url}/stac", 2016), FileIndex(()))
        assert api.requests["stac"] >= 1 and api.requests["landing"] == 1  # only the control's


def test_one_1cm_item_does_not_size_the_mosaic_and_is_reported(tmp_path):
    left, top = _utm_origin()
    for i, (dx, dy) in enumerate([(0, 0), (500, 0), (0, -500)]):
        _quad(tmp_path / f"q{i}.tif", left + dx, top + dy, size=500, seed=i)
    _quad(tmp_path / "fine.tif", left + 500, top - 500, res=0.01, size=500, seed=9)  # 5 m x 5 m of 1 cm
    with RangeFileServer(tmp_path) as files:
        quads = [{"id": f"q{i}", "href": f"{files.url}/q{i}.tif"} for i in range(3)]
        fine = {"id": "fine-1cm", "href": f"{files.url}/fine.tif"}
        params = {"regions": {"box": BOX}, "sign": None, "trust": TRUSTED}
        alone, _ = mosaic_naip({"box_2016": quads}, params)
        mosaics, refused = mosaic_naip({"box_2016": [*quads, fine]}, params)
        grid = lambda m: (m.crs, m.transform, m.width, m.height)  # noqa: E731
        assert grid(mosaics["box_2016"]) == grid(alone["box_2016"]) and alone["box_2016"].transform.a == 1
        assert [r["id"] for r in refused["box_2016"]] == ["fine-1cm"]
        assert "0.01" in refused["box_2016"][0]["reason"]
        api = {"stac_url": "https://user:pw@api.example/stac?token=T0K3N", "collection": "naip"}
        report = summarise_acquisition(
            {"box_2016": [*quads, fine]}, FileIndex(()), refused, {**params, **api}
        )
        assert report["refused"]["box_2016"][0]["id"] == "fine-1cm"
        assert report["stac_url"] == "https://api.example/stac" and "T0K3N" not in json.dumps(report)
        with pytest.raises(ValueError, match=r"acquire\.max_pixels"):
            mosaic_naip({"box_2016": quads}, {**params, "max_pixels": 1000})


def test_the_trust_policy_in_one_place():
    """What HrefPolicy refuses and allows, and how GDAL is configured for every read."""
    from types import SimpleNamespace

    from landuse_kedro.pipelines.acquire.hrefs import HrefPolicy, HrefRefused

    policy = HrefPolicy.from_params(
        {
            "stac_url": "https://api.example.org/stac/v1?token=T0K3N",
            "trust": {"hosts": ["*.blob.core.windows.net", "cdn.example.org"]},
            "nlcd": {"editions": {2016: {"href": "https://data.example.net/nlcd_2016.tif"}}},
        }
    )
    for allowed in (
        "https://naipeuwest.blob.core.windows.net/naip/q.tif?se=1&sig=2",
        "https://cdn.example.org/q.tif",
        "https://api.example.org/stac/v1/search",  # stac_url's host
        "https://data.example.net/nlcd_2016.tif",  # a host configuration names
    ):
        policy.check(allowed, "item")
    for refused, why in {
        "http://cdn.example.org/q.tif": "scheme 'http'",
        "az://container/blob.tif": "scheme 'az'",  # /vsiaz/, with the user's credentials
        "s3://bucket/key.tif": "scheme 's3'",
        "/vsiaz/container/blob.tif": "virtual file system",
        "https://cdn.example.org/vsizip/x.zip/q.tif": "nests a GDAL virtual",
        "C:\\data\\q.tif": "a local path",
        "q.tif": "a local path",
        "https://evil.example.com/q.tif?sig=S3CR3T": "host 'evil.example.com'",
    }.items():
        with pytest.raises(HrefRefused, match=why) as caught:
            policy.check(refused, "NAIP item x")
        assert "S3CR3T" not in str(caught.value) and "NAIP item x" in str(caught.value)
    with pytest.raises(HrefRefused, match="evil.example.com"):  # a `next` link the API hands out
        policy.request_modifier(SimpleNamespace(url="https://evil.example.com/search?page=2"))
    anywhere = HrefPolicy.from_params({"trust": {"hosts": None}})
    anywhere.check("https://any.example.com/q.tif", "item")  # null: any public host...
    for internal in ("https://169.254.169.254/metadata", "https://10.0.0.4/q.tif", "https://localhost/q.tif"):
        with pytest.raises(HrefRefused, match="internal address"):  # ...but no internal one
            anywhere.check(internal, "item")
    from landuse_kedro.pipelines.acquire.hrefs import _internal
    from landuse_kedro.pipelines.acquire.remote_file import resolved_public

    assert resolved_public("https://localhost/q.tif", _internal).startswith("its host resolves to")
    assert resolved_public("https://does-not-resolve.invalid/q.tif", _internal) is None  # left to the request
    with pytest.raises(HrefRefused, match="NAIP item x: refused href .*host 'evil.example.com'"):
        policy.check_request("https://evil.example.com/q.tif", "NAIP item x")  # each request, redirects too
    with pytest.raises(ValueError, match="only http and https"):
        HrefPolicy.from_params({"trust": {"schemes": ["https", "file"]}})
    options = HrefPolicy.from_params({"timeout_s": 7, "retries": 2}).gdal_options()
    assert options["GDAL_VRT_ENABLE_RAWRASTERBAND"] == "NO" and options["GDAL_HTTP_NETRC"] == "NO"
    assert options["GDAL_HTTP_TIMEOUT"] == options["GDAL_HTTP_CONNECTTIMEOUT"] == "7"
    assert options["GDAL_HTTP_MAX_RETRY"] == "2"
