"""Generate the project's default data: NAIP-like scenes and NLCD-like land cover for a few regions.

We cannot download NAIP or NLCD here, so the pipeline draws a 1 m land-cover map per region
(irregular parcels, balanced class areas, water, small inclusions), develops some parcels between
the two years, renders imagery from it and derives 30 m NLCD rasters in CONUS Albers by majority
reprojection, so data_preparation has to reproject exactly as with real data.
Everything is deterministic from ``seed``.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform, transform_bounds

from landuse_kedro import scene_keys
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.sample_scene import textures
from landuse_kedro.raster import GeoRaster

logger = logging.getLogger(__name__)

NLCD_CODES = (11, 21, 22, 23, 24, 31, 41, 42, 43, 51, 52, 71, 72, 73, 74, 81, 82, 90, 95)
# Real NLCD cells are aligned on this origin (EPSG:5070).
NLCD_ORIGIN = (-2493045.0, 3310005.0)
# The official NLCD legend colours, so the rasters look familiar in a GIS.
NLCD_COLOURS = {
    11: (70, 107, 159),
    21: (222, 197, 197),
    22: (217, 146, 130),
    23: (235, 0, 0),
    24: (171, 0, 0),
    31: (179, 172, 159),
    41: (104, 171, 95),
    42: (28, 95, 44),
    43: (181, 197, 143),
    51: (166, 140, 48),
    52: (204, 184, 121),
    71: (223, 223, 194),
    72: (209, 209, 130),
    73: (163, 204, 81),
    74: (130, 186, 158),
    81: (220, 217, 57),
    82: (171, 108, 40),
    90: (184, 217, 235),
    95: (108, 159, 184),
}
DEVELOPED = (21, 22, 23, 24)
PARCEL_STEP = 2  # parcels are laid out on a 2 m grid: fast, and finer than any 30 m label


@dataclass(frozen=True)
class RegionLandCover:
    """The 1 m truth of one region on its grid (scene plus ``margin`` on every side)."""

    name: str
    crs: CRS
    transform: Affine  # of the grid with margin; the scene starts at (margin, margin)
    margin: int
    scene_size: int
    parcels: np.ndarray  # (rows, cols) parcel index
    codes: dict[str, np.ndarray]  # "older" / "newer" -> (rows, cols) NLCD codes
    parcel_code: np.ndarray  # (parcels,) NLCD code of each parcel in the older year
    looks_like: np.ndarray  # (parcels,) code the imagery shows instead (0: as labelled)

    def appearance(self, year_key: str) -> np.ndarray:
        """The codes the imagery is drawn from: the labels, except where NLCD is wrong."""
        codes = self.codes[year_key]
        wrong = (self.looks_like[self.parcels] > 0) & (codes == self.parcel_code[self.parcels])
        return np.where(wrong, self.looks_like[self.parcels], codes)

    @property
    def scene_transform(self) -> Affine:
        return self.transform @ Affine.translation(self.margin, self.margin)

    def scene(self, array: np.ndarray) -> np.ndarray:
        m, s = self.margin, self.scene_size
        return array[m : m + s, m : m + s]

    def newly_developed(self) -> np.ndarray:
        """1 where the scene became developed between the two years."""
        older, newer = (self.scene(self.codes[year]) for year in ("older", "newer"))
        return (np.isin(newer, DEVELOPED) & ~np.isin(older, DEVELOPED)).astype(np.uint8)


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent, reproducible streams per region and purpose (``hash()`` is salted per process)."""
    return np.random.default_rng([seed, *(zlib.crc32(str(key).encode()) for key in keys)])


def _check_parameters(params: dict[str, Any]) -> None:
    if int(params["scene_size"]) < 64:
        raise ValueError(f"sample_scene.scene_size must be at least 64 px, got {params['scene_size']}.")
    if not params["regions"]:
        raise ValueError("sample_scene.regions is empty: nothing to generate.")
    for name, codes in params["nlcd_codes"].items():
        unknown = set(map(int, codes)) - set(NLCD_CODES)
        if unknown:
            raise ValueError(f"sample_scene.nlcd_codes.{name} has codes outside NLCD: {sorted(unknown)}.")
    missing = set(params["class_area"]) ^ set(params["nlcd_codes"])
    if missing:
        raise ValueError(
            f"class_area and nlcd_codes must list the same classes; differ in {sorted(missing)}."
        )
    for name, region in params["regions"].items():
        if not CRS.from_user_input(region["crs"]).is_projected:
            raise ValueError(f"Region '{name}': CRS {region['crs']} is not projected (metre pixels needed).")


def _block_map(size: int, margin: int, spacing: int) -> np.ndarray:
    """Square parcels aligned with the scene's corner: with ``spacing`` = tile size every parcel is
    a tile, which guarantees pure tiles in tiny test scenes."""
    index = (np.arange(size) - margin) // spacing
    index -= index.min()
    return (index[:, None] * (index.max() + 1) + index[None, :]).astype(np.int32)


def _parcel_map(rng: np.random.Generator, size: int, spacing: float) -> np.ndarray:
    """Irregular parcels: a weighted Voronoi diagram of jittered grid seeds on warped coordinates."""
    n = int(np.ceil(size / PARCEL_STEP))
    warp = 0.06 * spacing / PARCEL_STEP
    yy, xx = np.indices((n, n), dtype=np.float32)
    xx += warp * textures.smooth_noise(rng, (n, n), 60.0 / PARCEL_STEP)
    yy += warp * textures.smooth_noise(rng, (n, n), 60.0 / PARCEL_STEP)
    step = spacing / PARCEL_STEP
    centres = np.arange(-0.5, n / step + 1.0) * step
    sy, sx = (c.ravel() + rng.uniform(-0.4, 0.4, c.size) * step for c in np.meshgrid(centres, centres))
    weight = rng.uniform(0.0, 0.45, sx.size) * step  # additive weights: varied parcel sizes
    best = np.full((n, n), np.inf, np.float32)
    parcels = np.zeros((n, n), np.int32)
    for index, (cx, cy, w) in enumerate(zip(sx, sy, weight)):
        distance = np.hypot(xx - cx, yy - cy) - w
        closer = distance < best
        best[closer] = distance[closer]
        parcels[closer] = index
    _, parcels = np.unique(parcels, return_inverse=True)  # drop seeds that own no pixel
    parcels = parcels.reshape(n, n).astype(np.int32)
    return np.repeat(np.repeat(parcels, PARCEL_STEP, 0), PARCEL_STEP, 1)[:size, :size]


def _assign_classes(rng: np.random.Generator, area: np.ndarray, targets: dict[str, float]) -> list[str]:
    """Give each parcel a class so class areas follow ``targets``: largest parcels first, each to the
    class furthest below its share (with a little randomness)."""
    names = list(targets)
    share = np.array([targets[name] for name in names], float)
    share /= share.sum()
    assigned = np.zeros(len(names))
    classes = [""] * len(area)
    for parcel in np.argsort(-(area * rng.uniform(0.8, 1.2, len(area)))):
        deficit = share * (assigned.sum() + area[parcel]) - assigned
        pick = int(np.argmax(deficit * rng.uniform(0.85, 1.15, len(names))))
        if area[parcel] == 0:  # parcels only in the margin
            pick = int(rng.choice(len(names), p=share))
        classes[parcel] = names[pick]
        assigned[pick] += area[parcel]
    return classes


def _draw_code(rng: np.random.Generator, weights: dict) -> int:
    codes = [int(code) for code in weights]
    p = np.array([float(weights[code]) for code in weights])
    return int(rng.choice(codes, p=p / p.sum()))


def _developed_parcels(
    rng: np.random.Generator, parcels: np.ndarray, area: np.ndarray, changeable: np.ndarray, target: float
) -> list[int]:
    """Parcels that get developed: grown as a cluster of neighbours (as subdivisions spread), large
    parcels first, so most changed tiles are wholly changed rather than cut by a border."""
    n = np.int64(parcels.max()) + 1
    keys = []
    for first, second in ((parcels[:, :-1], parcels[:, 1:]), (parcels[:-1, :], parcels[1:, :])):
        border = first != second
        keys.append(first[border].astype(np.int64) * n + second[border])
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(*(side.tolist() for side in np.divmod(np.unique(np.concatenate(keys)), n))):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    chosen: list[int] = []
    remaining = set(np.flatnonzero(changeable).tolist())
    while remaining and area[chosen].sum() < target:
        frontier = sorted(set().union(*(neighbours.get(c, set()) for c in chosen)) & remaining)
        pool = np.array(frontier or sorted(remaining))
        weight = area[pool] ** 2
        pick = int(rng.choice(pool, p=weight / weight.sum()))
        chosen.append(pick)
        remaining.discard(pick)
    return chosen


def _region_land_cover(name: str, region: dict[str, Any], params: dict[str, Any]) -> RegionLandCover:
    seed, scene, margin = int(params["seed"]), int(params["scene_size"]), int(params["margin"])
    size = scene + 2 * margin
    rng = _rng(seed, name, "layout")
    crs = CRS.from_user_input(region["crs"])
    (east,), (north,) = transform("EPSG:4326", crs, [region["lon"]], [region["lat"]])
    left, top = round(east - scene / 2) - margin, round(north + scene / 2) + margin
    grid = Affine(1.0, 0.0, left, 0.0, -1.0, top)

    if params["layout"] == "blocks":
        parcels = _block_map(size, margin, int(params["parcel_size"]))
    elif params["layout"] == "voronoi":
        parcels = _parcel_map(rng, size, float(params["parcel_size"]))
    else:
        raise ValueError(f"sample_scene.layout must be 'voronoi' or 'blocks', got {params['layout']!r}.")
    n_parcels = int(parcels.max()) + 1
    interior = np.zeros((size, size), bool)
    interior[margin : margin + scene, margin : margin + scene] = True
    area = np.bincount(parcels[interior], minlength=n_parcels).astype(float)
    classes = _assign_classes(rng, area, params["class_area"])
    parcel_code = np.array([_draw_code(rng, params["nlcd_codes"][c]) for c in classes], np.uint8)
    older = parcel_code[parcels]
    # NLCD is a 30 m classification with errors: some parcels look like a neighbouring class
    noise = params["label_noise"]
    looks_like = np.array(
        [
            _draw_code(rng, params["nlcd_codes"][noise["looks_like"][c]])
            if c in noise["looks_like"] and rng.uniform() < float(noise["share"])
            else 0
            for c in classes
        ],
        np.uint8,
    )

    # small inclusions of another class (clearings, woodlots, ponds): NLCD is never pure
    inclusion_code = np.array(
        [_draw_code(rng, params["nlcd_codes"][params["inclusions"]["class_of"][c]]) for c in classes],
        np.uint8,
    )
    patches = textures.smooth_noise(rng, (size, size), float(params["inclusions"]["size"]))
    share = float(params["inclusions"]["share"])
    inside = patches > np.quantile(patches, 1.0 - share) if share > 0 else np.zeros_like(interior)
    older = np.where(inside, inclusion_code[parcels], older)

    # new development: whole parcels, until the wanted share of the scene
    newer = older.copy()
    changeable = np.array([c in params["developable"] for c in classes]) & (area > 0)
    chosen = _developed_parcels(
        rng, parcels, area, changeable, float(region.get("newly_developed", 0.0)) * scene**2
    )
    if chosen:
        new_code = np.array([_draw_code(rng, params["new_development_codes"]) for _ in chosen], np.uint8)
        lookup = np.zeros(n_parcels, np.uint8)
        lookup[chosen] = new_code
        newer = np.where(lookup[parcels] > 0, lookup[parcels], older)
    return RegionLandCover(
        name=name,
        crs=crs,
        transform=grid,
        margin=margin,
        scene_size=scene,
        parcels=parcels,
        codes={"older": older, "newer": newer},
        parcel_code=parcel_code,
        looks_like=looks_like,
    )


def refuse_existing_raw_data(
    sample_scene: dict[str, Any], naip_present: FileIndex, nlcd_present: FileIndex
) -> dict[str, Any]:
    """Let the generator run only while 01_raw holds neither NAIP nor NLCD: it would write its
    rasters over a user's own (a real NLCD put there before any NAIP was, README step 2).

    Args:
        sample_scene: ``params:sample_scene``, passed on unchanged (so the generator runs after this).
        naip_present: ``naip_present``, the GeoTIFFs in ``01_raw/naip``.
        nlcd_present: ``nlcd_present``, the GeoTIFFs in ``01_raw/nlcd``.

    Returns:
        ``sample_scene``, for :func:`generate_land_cover`.

    Raises:
        RuntimeError: Either folder holds a GeoTIFF; the message names them and what to do.
    """
    found = {
        name: index.urls for name, index in (("NAIP", naip_present), ("NLCD", nlcd_present)) if index.urls
    }
    if found:
        names = {name: [url.rsplit("/", 1)[-1] for url in urls] for name, urls in found.items()}
        listed = "; ".join(
            f"{name}: {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}"
            for name, files in names.items()
        )
        raise RuntimeError(
            f"sample_scene writes only into an empty data/01_raw, and it already holds rasters ({listed}); "
            "nothing was written. To use your data, add what is missing (NAIP in 01_raw/naip, NLCD in "
            "01_raw/nlcd, or `kedro run --pipelines acquire`, README), then `kedro run`. To generate the "
            "sample scene anyway, move data/01_raw/naip and data/01_raw/nlcd elsewhere first."
        )
    return sample_scene


def generate_land_cover(sample_scene: dict[str, Any]) -> dict[str, RegionLandCover]:
    """Draw the 1 m truth that every sample raster is derived from: each region's parcels and NLCD codes
    in the older and newer year, deterministic from ``seed``.

    Args:
        sample_scene: ``params:sample_scene`` (``allowed``, ``seed``, ``regions``, ``scene_size``,
            ``margin``, ``layout``, class areas and NLCD codes, label noise, inclusions, development).

    Returns:
        ``sample_land_cover``: region -> :class:`RegionLandCover`.

    Raises:
        RuntimeError: ``sample_scene.allowed`` is false (the environment holds real raw data).
        ValueError: A scene under 64 px, no regions, codes outside NLCD, ``class_area`` and
            ``nlcd_codes`` naming different classes, an unprojected region CRS, an unknown ``layout``,
            or overlapping regions.
    """
    if not sample_scene.get("allowed", True):
        raise RuntimeError(
            "sample_scene is switched off in this environment (sample_scene.allowed: false): it would write "
            "generated rasters over the environment's raw data. Upload real NAIP/NLCD instead."
        )
    _check_parameters(sample_scene)
    regions = {
        name: _region_land_cover(name, region, sample_scene)
        for name, region in sorted(sample_scene["regions"].items())
    }
    _check_disjoint(regions)
    for name, region in regions.items():
        changed = region.newly_developed().mean()
        logger.info(
            "Region %s: %d parcels, %s, %.1f%% of the scene newly developed",
            name,
            region.parcels.max() + 1,
            region.crs.to_string(),
            100 * changed,
        )
    return regions


def _albers_bounds(region: RegionLandCover, crs: CRS) -> tuple[float, float, float, float]:
    rows, cols = region.parcels.shape
    left, top = region.transform @ (0, 0)
    right, bottom = region.transform @ (cols, rows)
    return transform_bounds(region.crs, crs, left, bottom, right, top, densify_pts=21)


def _check_disjoint(regions: dict[str, RegionLandCover]) -> None:
    boxes = {name: _albers_bounds(region, CRS.from_epsg(5070)) for name, region in regions.items()}
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (l1, b1, r1, t1), (l2, b2, r2, t2) = boxes[a], boxes[b]
            if l1 < r2 and l2 < r1 and b1 < t2 and b2 < t1:
                raise ValueError(f"Regions '{a}' and '{b}' overlap; move them apart (lon/lat).")


def make_nlcd_rasters(
    land_cover: dict[str, RegionLandCover], sample_scene: dict[str, Any]
) -> dict[str, GeoRaster]:
    """Derive NLCD from the truth on the real NLCD grid alignment, so data_preparation has to reproject
    as with real data: per year one 30 m raster over all regions (nodata 0 elsewhere), each cell the
    majority code of the 1 m truth.

    Args:
        land_cover: ``sample_land_cover`` from :func:`generate_land_cover`.
        sample_scene: ``params:sample_scene`` (``nlcd``: ``crs``, ``resolution``, ``margin``;
            ``nlcd_years``).

    Returns:
        ``nlcd_rasters``: ``nlcd_<year>`` -> uint8 NLCD codes with the official colour table.
    """
    nlcd = sample_scene["nlcd"]
    crs, res, margin = CRS.from_user_input(nlcd["crs"]), float(nlcd["resolution"]), float(nlcd["margin"])
    boxes = np.array([_albers_bounds(region, crs) for region in land_cover.values()])
    x0, y0 = NLCD_ORIGIN
    left = x0 + res * np.floor((boxes[:, 0].min() - margin - x0) / res)
    right = x0 + res * np.ceil((boxes[:, 2].max() + margin - x0) / res)
    bottom = y0 + res * np.floor((boxes[:, 1].min() - margin - y0) / res)
    top = y0 + res * np.ceil((boxes[:, 3].max() + margin - y0) / res)
    grid = Affine(res, 0.0, left, 0.0, -res, top)
    shape = (int(round((top - bottom) / res)), int(round((right - left) / res)))

    rasters = {}
    for year_key, year in sample_scene["nlcd_years"].items():
        mosaic = np.zeros(shape, np.uint8)
        for region, box in zip(land_cover.values(), boxes):
            col0, row0 = (int(v) for v in np.floor(~grid @ (box[0], box[3])))
            col1, row1 = (int(v) for v in np.ceil(~grid @ (box[2], box[1])))
            window = np.zeros((row1 - row0, col1 - col0), np.uint8)
            reproject(
                region.codes[year_key],
                window,
                src_transform=region.transform,
                src_crs=region.crs,
                src_nodata=0,
                dst_transform=grid @ Affine.translation(col0, row0),
                dst_crs=crs,
                dst_nodata=0,
                resampling=Resampling.mode,
            )
            target = mosaic[row0:row1, col0:col1]
            target[window > 0] = window[window > 0]
        rasters[scene_keys.nlcd_key(year)] = GeoRaster(
            mosaic[None], crs, grid, nodata=0, colormap=NLCD_COLOURS
        )
        logger.info("nlcd_%s: %d x %d cells of %g m in %s", year, shape[1], shape[0], res, crs.to_string())
    return rasters


def _parcel_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Texture parameters per parcel; the same in both years (structure does not move)."""
    return {
        "theta": rng.uniform(0.0, np.pi, n).astype(np.float32),
        "block": rng.uniform(70.0, 120.0, n).astype(np.float32),
        "field_size": rng.uniform(110.0, 260.0, n).astype(np.float32),
        "u1": rng.uniform(size=n).astype(np.float32),
        "u2": rng.uniform(size=n).astype(np.float32),
        "u3": rng.uniform(size=n).astype(np.float32),
        "colour": (rng.normal(0.0, 10.0, (n, 4)) * [1, 1, 1, 1.6]).astype(np.float32),
    }


def render_scene(region: RegionLandCover, year_key: str, seed: int) -> GeoRaster:
    """The 4-band image of one region in one year (called lazily, one scene in memory at a time)."""
    start = time.perf_counter()
    n = int(region.parcels.max()) + 1
    params = _parcel_params(_rng(seed, region.name, "parcels"), n)
    fields = textures.region_fields(_rng(seed, region.name, "fields"), (region.scene_size,) * 2)
    seasons = _rng(seed, region.name, "seasons")
    green_older = seasons.uniform(0.4, 1.0)
    green = {"older": green_older, "newer": float(np.clip(green_older - seasons.uniform(0.2, 0.5), 0, 1))}
    stages = seasons.uniform(size=(2, n)).astype(np.float32)  # crop stage per parcel and year
    params["stage"] = stages[0 if year_key == "older" else 1]
    year_rng = _rng(seed, region.name, year_key, "look")
    look = textures.random_look(year_rng, green[year_key])
    image = textures.render_scene(
        region.scene(region.appearance(year_key)),
        region.scene(region.parcels),
        params,
        fields,
        look,
        year_rng,
    )
    logger.info(
        "Rendered %s %s scene (%d x %d px, %s) in %.1f s",
        region.name,
        year_key,
        region.scene_size,
        region.scene_size,
        region.crs.to_string(),
        time.perf_counter() - start,
    )
    return GeoRaster(image, region.crs, region.scene_transform, descriptions=("red", "green", "blue", "nir"))


def render_naip_scenes(
    land_cover: dict[str, RegionLandCover], sample_scene: dict[str, Any]
) -> dict[str, Callable[[], GeoRaster]]:
    """Render the 4-band imagery lazily, so only one scene is in memory at a time.

    Args:
        land_cover: ``sample_land_cover`` from :func:`generate_land_cover`.
        sample_scene: ``params:sample_scene`` (``years``, ``seed``).

    Returns:
        ``naip_scenes``: ``<region>_<year>`` -> a callable that renders the scene (red, green, blue, NIR)
        when the catalog saves it.
    """
    scenes = {}
    for name, region in land_cover.items():
        for year_key, year in sample_scene["years"].items():
            scenes[scene_keys.scene_key(name, year)] = partial(
                render_scene, region, year_key, int(sample_scene["seed"])
            )
    logger.info("naip_scenes: rendering %s as the catalog saves them", ", ".join(scenes))
    return scenes


def make_change_truth(land_cover: dict[str, RegionLandCover]) -> dict[str, GeoRaster]:
    """Record where development really happened, so change detection can be scored against it.

    Args:
        land_cover: ``sample_land_cover`` from :func:`generate_land_cover`.

    Returns:
        ``sample_change_truth``: region -> a uint8 mask on the scene grid, 1 where land became developed
        between the two years.
    """
    return {
        name: GeoRaster(region.newly_developed()[None], region.crs, region.scene_transform)
        for name, region in land_cover.items()
    }
