"""A county-sized NAIP + NLCD input, built in seconds from the generated sample scene.

    .venv/bin/python benchmarks/county_input.py --raw data/01_raw --out /tmp/county --rows 13 --cols 13
        [--holdout 2] [--check] [--measure] [--shared]

Why: a county is ~8,000-33,000 tiles of 224 px (7 x 6 to 13 x 13 scenes of 3136 px); generating it
with the sample_scene pipeline would take about half an hour and ~11 GB for 13 x 13. Here the three
EPSG:26919 sample scenes of a year are placed edge to edge, cycling middlesex, essex, norfolk, in a
GDAL VRT (a few hundred KB of XML, absolute paths to per-copy symlinks of the sources), so the county
reads like one big raster in about 1 s of building. Each copy is 3136 px = 14 tiles, so copies sit on
the tile grid and every tile comes from exactly one source scene. A small holdout mosaic (validation
region) lies directly south of the county.

NLCD is rebuilt to match the copies: the sample NLCD is resampled (nearest) onto each source scene's
footprint on a 28 m UTM grid (3136 / 28 = 112 cells, so copy edges are cell edges), pasted at the
copy's place, mirror-padded by a margin, then reprojected (nearest) to EPSG:5070 at 30 m on the
sample's grid alignment, like a real NLCD clip. Two nearest resamplings move parcel edges by up to
~30 m, so checks compare 5 x 5 majorities, not pixels.

Copies repeat pixels: the holdout is not independent of the county (use it to time validation, not to
judge accuracy). Reads of repeated copies through ONE path would hit GDAL's block cache (see
``build_county_input``'s ``distinct``), hence a symlink per copy.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject, transform, transform_bounds
from rasterio.windows import Window

TILE = 224
REGIONS = ("middlesex", "essex", "norfolk")  # the sample's EPSG:26919 scenes; middlesex = origin
CRS_UTM = "EPSG:26919"
NAIP_YEARS = (2016, 2012)
NLCD_YEARS = (2011, 2016)
LABEL_RES = 28  # m: divides 3136, so every copy is exactly 112 x 112 label cells
NLCD_RES = 30
MARGIN_CELLS = 22  # 616 m of labels around everything (>= 300 m after the rotation to EPSG:5070)
Copy = tuple[int, int, str]  # (row, col, region) of one scene copy in a mosaic


def _copies(rows: int, cols: int, start: int = 0) -> list[Copy]:
    return [(r, c, REGIONS[(start + r * cols + c) % len(REGIONS)]) for r in range(rows) for c in range(cols)]


def _vrt_xml(
    paths: list[Path],
    copies: list[Copy],
    shape: tuple[int, int],
    origin: tuple[float, float],
    scene: int,
    block: tuple[int, int],
    wkt: str,
) -> str:
    """SimpleSources only (no nodata, no scaling), so GDAL reads straight from the sources' blocks.
    Band 4 is 'Undefined' colour, never Alpha: NAIP's 4th band is NIR and must not become a mask."""
    props = (
        f'<SourceProperties RasterXSize="{scene}" RasterYSize="{scene}" DataType="Byte" '
        f'BlockXSize="{block[1]}" BlockYSize="{block[0]}"/>'
        f'<SrcRect xOff="0" yOff="0" xSize="{scene}" ySize="{scene}"/>'
    )
    bands = []
    for band, colour in enumerate(("Red", "Green", "Blue", "Undefined"), start=1):
        simple = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(path))}'
            f"</SourceFilename><SourceBand>{band}</SourceBand>{props}"
            f'<DstRect xOff="{c * scene}" yOff="{r * scene}" xSize="{scene}" ySize="{scene}"/>'
            f"</SimpleSource>\n"
            for path, (r, c, _) in zip(paths, copies)
        )
        bands.append(
            f'<VRTRasterBand dataType="Byte" band="{band}" blockXSize="{block[1]}" '
            f'blockYSize="{block[0]}">'
            f"<ColorInterp>{colour}</ColorInterp>\n{simple}</VRTRasterBand>\n"
        )
    return (
        f'<VRTDataset rasterXSize="{shape[1]}" rasterYSize="{shape[0]}">\n'
        f"<SRS>{escape(wkt)}</SRS>\n<GeoTransform>{origin[0]}, 1.0, 0.0, {origin[1]}, 0.0, -1.0"
        f"</GeoTransform>\n{''.join(bands)}</VRTDataset>\n"
    )


def _labels_on_scene(nlcd: rasterio.io.DatasetReader, scene: rasterio.io.DatasetReader) -> np.ndarray:
    """The sample NLCD, nearest, on the scene's footprint at LABEL_RES m (112 x 112 cells)."""
    cells = scene.width // LABEL_RES
    out = np.zeros((cells, cells), np.uint8)
    left, top = scene.transform.c, scene.transform.f
    reproject(
        rasterio.band(nlcd, 1),
        out,
        dst_transform=Affine(LABEL_RES, 0, left, 0, -LABEL_RES, top),
        dst_crs=scene.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    return out


def _write_nlcd(
    path: Path, nlcd: rasterio.io.DatasetReader, labels: np.ndarray, origin: tuple[float, float]
) -> None:
    """UTM label mosaic (top-left ``origin``, no margin yet) -> mirrored margin -> EPSG:5070, 30 m."""
    m = MARGIN_CELLS
    padded = np.pad(labels, m, mode="symmetric")  # plausible land cover around the edges
    src_transform = Affine(LABEL_RES, 0, origin[0] - m * LABEL_RES, 0, -LABEL_RES, origin[1] + m * LABEL_RES)
    right, bottom = src_transform * (padded.shape[1], padded.shape[0])
    left, bot, rig, top = transform_bounds(
        CRS_UTM, nlcd.crs, src_transform.c, bottom, right, src_transform.f, densify_pts=21
    )
    ox, oy = nlcd.transform.c % NLCD_RES, nlcd.transform.f % NLCD_RES  # keep the sample's alignment
    x0 = math.floor((left - ox) / NLCD_RES) * NLCD_RES + ox
    y0 = math.ceil((top - oy) / NLCD_RES) * NLCD_RES + oy
    width, height = math.ceil((rig - x0) / NLCD_RES), math.ceil((y0 - bot) / NLCD_RES)
    dst_transform = Affine(NLCD_RES, 0, x0, 0, -NLCD_RES, y0)
    out = np.zeros((height, width), np.uint8)
    reproject(
        padded,
        out,
        src_transform=src_transform,
        src_crs=CRS_UTM,
        src_nodata=0,
        dst_transform=dst_transform,
        dst_crs=nlcd.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=nlcd.crs,
        transform=dst_transform,
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        try:  # palette before pixels: GDAL cannot change the photometric tag afterwards
            dst.write_colormap(1, nlcd.colormap(1))
        except ValueError:
            pass
        dst.write(out, 1)


def build_county_input(
    raw: Path, out: Path, rows: int, cols: int, holdout: int = 2, *, distinct: bool = True
) -> dict:
    """Write the county and holdout VRT mosaics (both NAIP years) and matching NLCD under ``out``.

    ``distinct``: each copy reads its source through its own symlink (``out/copies/``). GDAL
    caches blocks per opened file, so through one shared path a repeated copy is served from the
    block cache (3 scenes' strips fit in ~52 MB) and reads look far faster than a real county's;
    distinct paths make every copy decode its own blocks, as distinct scenes would.

    Returns (and writes to ``out/county_input.json``, which ``check_county_input`` reads) the scene
    keys with their paths and full-tile counts, the layout of the copies and the source paths.
    """
    started = time.perf_counter()
    raw, out = Path(raw).resolve(), Path(out).resolve()
    (out / "naip").mkdir(parents=True, exist_ok=True)
    (out / "nlcd").mkdir(parents=True, exist_ok=True)
    links = out / "copies"  # not under naip/, where a *.tif glob would take them for scenes
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir()
    sources = {year: {r: raw / "naip" / f"{r}_{year}.tif" for r in REGIONS} for year in NAIP_YEARS}
    with rasterio.open(sources[2016]["middlesex"]) as first:
        scene, wkt, block = first.width, first.crs.to_wkt(), first.block_shapes[0]
        origin = (first.transform.c, first.transform.f)
    assert scene % TILE == 0 and scene % LABEL_RES == 0, f"scene {scene} px does not fit the grids"
    for path in (p for year in sources.values() for p in year.values()):
        with rasterio.open(path) as src:  # copies must be interchangeable pieces of one grid
            assert (src.width, src.height, src.count, src.dtypes[0], src.nodata) == (
                scene,
                scene,
                4,
                "uint8",
                None,
            ), f"{path}: not a 4-band uint8 {scene} px scene"
            assert src.crs == CRS_UTM and src.res == (1.0, 1.0), f"{path}: not 1 m {CRS_UTM}"
    mosaics = {  # name: (rows, cols, top-left, copies); the holdout sits directly south
        "county": (rows, cols, origin, _copies(rows, cols)),
        "holdout": (
            holdout,
            holdout,
            (origin[0], origin[1] - rows * scene),
            _copies(holdout, holdout, start=1),
        ),
    }
    scenes, tiles = {}, {}
    for name, (n_rows, n_cols, top_left, copies) in mosaics.items():
        for year in NAIP_YEARS:
            key, shape = f"{name}_{year}", (n_rows * scene, n_cols * scene)
            paths = [sources[year][region] for _, _, region in copies]
            if distinct:
                paths = [links / f"{key}_{r:02d}_{c:02d}.tif" for r, c, _ in copies]
                for link, (_, _, region) in zip(paths, copies):
                    link.symlink_to(sources[year][region])
            path = out / "naip" / f"{key}.vrt"
            path.write_text(_vrt_xml(paths, copies, shape, top_left, scene, block, wkt))
            scenes[key] = str(path)
            tiles[key] = (shape[0] // TILE) * (shape[1] // TILE)

    # Labels: one grid over the bounding rectangle of both mosaics; cells of no mosaic (east of the
    # holdout) take the cycling pattern too, so the whole margin holds plausible codes.
    grid_cols, cells = max(cols, holdout), scene // LABEL_RES
    owner = {(r, c): region for r, c, region in _copies(rows + holdout, grid_cols)}
    owner.update({(r, c): reg for r, c, reg in mosaics["county"][3]})
    owner.update({(rows + r, c): reg for r, c, reg in mosaics["holdout"][3]})
    nlcd_paths = {}
    for year in NLCD_YEARS:
        with rasterio.open(raw / "nlcd" / f"nlcd_{year}.tif") as nlcd:
            pieces = {}
            for region in REGIONS:
                with rasterio.open(sources[2016][region]) as src:
                    pieces[region] = _labels_on_scene(nlcd, src)
            labels = np.zeros(((rows + holdout) * cells, grid_cols * cells), np.uint8)
            for (r, c), region in owner.items():
                labels[r * cells : (r + 1) * cells, c * cells : (c + 1) * cells] = pieces[region]
            path = out / "nlcd" / f"nlcd_{year}.tif"
            _write_nlcd(path, nlcd, labels, origin)
            nlcd_paths[f"nlcd_{year}"] = str(path)

    result = {
        "scenes": scenes,
        "tiles": tiles,
        "nlcd": nlcd_paths,
        "crs": CRS_UTM,
        "scene_px": scene,
        "rows": rows,
        "cols": cols,
        "holdout": holdout,
        "raw": str(raw),
        "distinct": distinct,
        "origins": {name: list(m[2]) for name, m in mosaics.items()},
        "copies": {name: m[3] for name, m in mosaics.items()},
        "sources": {str(y): {r: str(p) for r, p in s.items()} for y, s in sources.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "county_input.json").write_text(json.dumps(result, indent=1))
    return result


def _expected(info: dict, name: str, year: int, window: Window) -> np.ndarray:
    """Pixels of ``window`` of a mosaic, read piece by piece from the source scenes."""
    scene, out = info["scene_px"], np.zeros((4, window.height, window.width), np.uint8)
    for r, c, region in info["copies"][name]:
        rs, cs = max(window.row_off, r * scene), max(window.col_off, c * scene)
        re_, ce = (
            min(window.row_off + window.height, (r + 1) * scene),
            min(window.col_off + window.width, (c + 1) * scene),
        )
        if rs < re_ and cs < ce:
            with rasterio.open(info["sources"][str(year)][region]) as src:
                part = src.read(window=Window(cs - c * scene, rs - r * scene, ce - cs, re_ - rs))
            out[:, rs - window.row_off : re_ - window.row_off, cs - window.col_off : ce - window.col_off] = (
                part
            )
    return out


def _majority(dataset: rasterio.io.DatasetReader, x: float, y: float) -> int:
    row, col = dataset.index(x, y)
    block = dataset.read(1, window=Window(col - 2, row - 2, 5, 5), boundless=True, fill_value=0)
    return int(np.bincount(block.ravel(), minlength=256)[1:].argmax() + 1)  # ignore nodata 0


def check_county_input(out: Path, windows: int = 6, points: int = 150, seed: int = 0) -> None:
    """Open what ``build_county_input`` wrote and compare it with the sources; raises on a mismatch."""
    info = json.loads((Path(out) / "county_input.json").read_text())
    rng, scene = np.random.default_rng(seed), info["scene_px"]
    for key, path in info["scenes"].items():
        name, year = key.rsplit("_", 1)
        rows, cols = (info["rows"], info["cols"]) if name == "county" else (info["holdout"],) * 2
        with rasterio.open(path) as ds:
            assert ds.crs == CRS_UTM and (ds.height, ds.width) == (rows * scene, cols * scene), key
            assert ds.count == 4 and set(ds.dtypes) == {"uint8"} and ds.nodata is None, key
            assert ds.colorinterp[3] != ColorInterp.alpha, f"{key}: band 4 (NIR) flagged as alpha"
            assert (ds.transform.c, ds.transform.f) == tuple(info["origins"][name]), key
            assert (ds.dataset_mask(window=Window(100, 100, 512, 512)) == 255).all(), f"{key}: mask"
            picks = [
                Window(
                    int(rng.integers(ds.width // TILE)) * TILE,
                    int(rng.integers(ds.height // TILE)) * TILE,
                    TILE,
                    TILE,
                )
                for _ in range(windows)
            ]
            if rows > 1 or cols > 1:  # an unaligned window across a copy edge (corner if it can)
                picks.append(
                    Window(scene - 100 if cols > 1 else 0, scene - 100 if rows > 1 else 0, TILE, TILE)
                )
            for window in picks:
                assert np.array_equal(ds.read(window=window), _expected(info, name, int(year), window)), (
                    f"{key} {window}"
                )

    tops = {}  # each source scene's top-left corner
    for region, path in info["sources"]["2016"].items():
        with rasterio.open(path) as src:
            tops[region] = (src.transform.c, src.transform.f)
    for label_key, path in info["nlcd"].items():
        with (
            rasterio.open(path) as ds,
            rasterio.open(Path(info["raw"]) / "nlcd" / f"{label_key}.tif") as sample,
        ):
            for name, (x0, y0) in info["origins"].items():
                rows, cols = (info["rows"], info["cols"]) if name == "county" else (info["holdout"],) * 2
                w, h = cols * scene, rows * scene
                # the mosaic + 300 m: a ring of points just outside must carry real codes
                t = np.linspace(0, 1, 41)
                xs = np.concatenate(
                    [
                        x0 - 300 + t * (w + 600),
                        x0 - 300 + t * (w + 600),
                        np.full_like(t, x0 - 300),
                        np.full_like(t, x0 + w + 300),
                    ]
                )
                ys = np.concatenate(
                    [
                        np.full_like(t, y0 + 300),
                        np.full_like(t, y0 - h - 300),
                        y0 + 300 - t * (h + 600),
                        y0 + 300 - t * (h + 600),
                    ]
                )
                ex, ey = transform(CRS_UTM, ds.crs, xs, ys)
                ring = np.array([v[0] for v in ds.sample(zip(ex, ey))])
                assert (ring > 0).all(), f"{label_key}: no labels 300 m around {name}"
                # labels inside copies = the sample's labels at the same place in the source scene
                agree = 0
                for _ in range(points):
                    r, c, region = info["copies"][name][int(rng.integers(rows * cols))]
                    dx, dy = rng.uniform(50, scene - 50, 2)
                    left, top = tops[region]
                    xs, ys = transform(
                        CRS_UTM, ds.crs, [x0 + c * scene + dx, left + dx], [y0 - r * scene - dy, top - dy]
                    )
                    agree += _majority(ds, xs[0], ys[0]) == _majority(sample, xs[1], ys[1])
                assert agree >= 0.9 * points, f"{label_key} {name}: {agree}/{points} labels agree"
                print(
                    f"check {label_key} {name}: {agree}/{points} 5x5 majorities agree, "
                    f"ring of {len(ring)} points at 300 m labelled"
                )
    print(f"check passed: {len(info['scenes'])} VRTs, {len(info['nlcd'])} NLCD rasters")


def _read_ms_per_tile(path: str, windows: list[Window], cache_mb: int) -> float:
    """Read ``windows`` (bands 1-3) in order from one open dataset; ms per 224 x 224 px.
    rasterio hands an int GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in BYTES: 64 means 64 bytes."""
    with rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20), rasterio.open(path) as ds:
        started = time.perf_counter()
        for window in windows:
            ds.read([1, 2, 3], window=window)
        seconds = time.perf_counter() - started
    return 1000 * seconds / (sum(w.width * w.height for w in windows) / TILE**2)


def measure_reads(out: Path, blocks: int = 20, cache_mb: int = 64) -> None:
    """County VRT vs the source GeoTIFFs, 8 x 8-tile blocks (bands 1-3) in row-major order."""
    info, side = json.loads((Path(out) / "county_input.json").read_text()), 8 * TILE
    vrt = info["scenes"]["county_2016"]
    started = time.perf_counter()
    for _ in range(20):
        rasterio.open(vrt).close()
    print(f"open county_2016.vrt: {(time.perf_counter() - started) * 50:.1f} ms per open")
    with rasterio.open(vrt) as ds:  # blocks that fit: a small county has fewer than ``blocks``
        side = min(side, ds.width // TILE * TILE, ds.height // TILE * TILE)
        per_row, rows = ds.width // side, ds.height // side
    blocks = min(blocks, per_row * rows)
    grid = [Window((i % per_row) * side, (i // per_row) * side, side, side) for i in range(blocks)]
    for mb in (cache_mb, 0):
        print(
            f"VRT (distinct={info['distinct']}), GDAL_CACHEMAX {mb} MB: "
            f"{_read_ms_per_tile(vrt, grid, mb):.2f} ms/tile ({blocks} blocks of {side} px)"
        )
    scene = info["scene_px"]  # each source once, in the same block sizes (clipped at its edges)
    within = [
        Window(c, r, min(side, scene - c), min(side, scene - r))
        for r in range(0, scene, side)
        for c in range(0, scene, side)
    ]
    direct = [_read_ms_per_tile(p, within, cache_mb) for p in info["sources"]["2016"].values()]
    print(
        f"source .tif direct, GDAL_CACHEMAX {cache_mb} MB: {np.mean(direct):.2f} ms/tile "
        f"({', '.join(f'{v:.2f}' for v in direct)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="folder with naip/ and nlcd/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, required=True, help="scene copies down (14 tiles each)")
    parser.add_argument("--cols", type=int, required=True, help="scene copies across")
    parser.add_argument("--holdout", type=int, default=2, help="holdout copies per side")
    parser.add_argument("--check", action="store_true", help="verify the output against the raw")
    parser.add_argument("--measure", action="store_true", help="time tile reads, VRT vs sources")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="copies share their source's path (block-cache hits across copies)",
    )
    args = parser.parse_args()
    info = build_county_input(
        args.raw, args.out, args.rows, args.cols, args.holdout, distinct=not args.shared
    )
    size = sum(p.lstat().st_size for p in Path(args.out).rglob("*") if not p.is_dir())
    print(
        f"built in {info['seconds']:.2f} s, {size / 1e6:.2f} MB on disk "
        f"(sources not copied); tiles: {info['tiles']}"
    )
    if args.check:
        check_county_input(args.out)
    if args.measure:
        measure_reads(args.out)


if __name__ == "__main__":
    main()
