"""Synthetic 1 m aerial imagery (R, G, B, NIR) for a map of NLCD codes.

Each land-cover kind has a texture a CNN can learn from structure, not only from colour: road grids
and roofs (developed), crop rows (cultivated), tree crowns (forest), scrub on soil (shrub), bare soil
or rock (barren), grass (herbaceous), water. Classes overlap on purpose (pasture vs grass, dense scrub
vs open forest, open-space developed vs grass) so the task is not trivial.

Structure (parcel layouts, tree positions, roads) depends only on the region's random fields, so an
unchanged parcel looks the same in both years; colour, season, crop stage, illumination and sensor
noise depend on the year. Everything is vectorised over the pixels of one kind at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

# The generator's own table: which texture draws which NLCD code.
KIND_OF_CODE: dict[int, str] = {
    11: "water",
    21: "developed",
    22: "developed",
    23: "developed",
    24: "developed",
    31: "barren",
    41: "forest",
    42: "forest",
    43: "forest",
    90: "forest",
    51: "shrub",
    52: "shrub",
    71: "herbaceous",
    72: "herbaceous",
    73: "herbaceous",
    74: "herbaceous",
    95: "herbaceous",
    81: "cultivated",
    82: "cultivated",
}
# Share of impervious surface by developed code (NLCD: open space, low, medium, high intensity).
DEVELOPED_INTENSITY = {21: 0.12, 22: 0.4, 23: 0.65, 24: 0.88}

# Typical NAIP digital numbers (R, G, B, NIR), summer.
GRASS = np.array([95, 122, 84, 175], np.float32)
DRY_GRASS = np.array([150, 140, 100, 135], np.float32)
LEAF = np.array([58, 86, 62, 165], np.float32)
NEEDLE = np.array([38, 60, 55, 115], np.float32)
SHADOW = np.array([26, 34, 36, 45], np.float32)
SOIL = np.array([150, 132, 108, 150], np.float32)
DARK_SOIL = np.array([108, 94, 80, 108], np.float32)
ROCK = np.array([165, 162, 154, 162], np.float32)
SAND = np.array([205, 188, 156, 198], np.float32)
GRAVEL = np.array([152, 148, 136, 152], np.float32)
ASPHALT = np.array([84, 87, 92, 74], np.float32)
CONCRETE = np.array([178, 174, 166, 160], np.float32)
CROP = np.array([72, 118, 58, 205], np.float32)
RIPE = np.array([170, 150, 98, 145], np.float32)
SCRUB = np.array([70, 84, 58, 130], np.float32)
WATER = np.array([38, 54, 62, 18], np.float32)
TURBID = np.array([72, 88, 74, 30], np.float32)
ROOFS = np.array(
    [
        [70, 70, 76, 64],
        [120, 118, 116, 108],
        [150, 150, 150, 138],
        [132, 82, 66, 92],
        [205, 205, 200, 186],
        [96, 72, 62, 78],
    ],
    np.float32,
)


@dataclass(frozen=True)
class RegionFields:
    """Random fields of one region (shared by its years), each (rows, cols) float32, ~N(0, 1)."""

    fine: np.ndarray  # pixel-scale grain
    crowns: np.ndarray  # band-pass at tree-crown scale (3-8 m)
    blobs: np.ndarray  # band-pass at shrub scale (1-3 m)
    medium: np.ndarray  # patches of ~15 m
    large: np.ndarray  # patches of ~80 m


def _normalise(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return (field / (field.std() + 1e-6)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Noise with features of about ``scale`` pixels: coarse white noise, cubic up-sampling (fast)."""
    coarse = [int(np.ceil(n / scale)) + 3 for n in shape]
    noise = rng.standard_normal(coarse).astype(np.float32)
    up = ndimage.zoom(noise, scale, order=3, prefilter=False)
    return _normalise(up[: shape[0], : shape[1]])


def band_pass(rng: np.random.Generator, shape: tuple[int, int], low: float, high: float) -> np.ndarray:
    white = rng.standard_normal(shape).astype(np.float32)
    return _normalise(ndimage.gaussian_filter(white, low) - ndimage.gaussian_filter(white, high))


def region_fields(rng: np.random.Generator, shape: tuple[int, int]) -> RegionFields:
    return RegionFields(
        fine=rng.standard_normal(shape).astype(np.float32),
        crowns=band_pass(rng, shape, 1.8, 5.0),
        blobs=band_pass(rng, shape, 1.0, 3.0),
        medium=smooth_noise(rng, shape, 15.0),
        large=smooth_noise(rng, shape, 80.0),
    )


def hash_uniform(*keys: np.ndarray, salt: int = 0) -> np.ndarray:
    """A uniform [0, 1) number per integer key tuple, without state: lots and fields keep their
    look wherever they are drawn from."""
    h = np.full(np.shape(keys[0]), salt * 0x27D4EB2F + 0x165667B1, dtype=np.uint64)
    for key, prime in zip(keys, (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)):
        h = (h + np.asarray(key).astype(np.int64).astype(np.uint64) * np.uint64(prime)) & np.uint64(
            0xFFFFFFFF
        )
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(12)
        h = (h * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(15)
    return (h.astype(np.float64) / 2.0**32).astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours a -> b; a, b are (4,) or (n, 4), t is (n,)."""
    t = np.clip(t, 0.0, 1.0)[:, None]
    return a * (1.0 - t) + b * t


@dataclass
class Pixels:
    """The pixels of one kind in one scene, as flat vectors, with their parcel's parameters."""

    x: np.ndarray
    y: np.ndarray
    code: np.ndarray
    parcel: np.ndarray
    params: dict[str, np.ndarray]  # per-parcel parameters gathered per pixel
    fields: dict[str, np.ndarray]  # RegionFields gathered per pixel
    green: float  # season of the year: 1 lush, 0 dry

    def rotated(self, salt: str = "theta") -> tuple[np.ndarray, np.ndarray]:
        theta = self.params[salt]
        cos, sin = np.cos(theta), np.sin(theta)
        return self.x * cos + self.y * sin, -self.x * sin + self.y * cos

    def vegetation(self, lush: np.ndarray, jitter: float = 1.0) -> np.ndarray:
        dry = DRY_GRASS if lush is GRASS else lush * 0.55 + DRY_GRASS * 0.45
        colour = _mix(dry[None, :], lush[None, :], np.full(self.x.shape, self.green))
        return colour + self.params["colour"] * jitter


# Each renderer returns (colours (n, 4) float32, heights (n,) in metres, for shadows).


def render_water(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    turbid = np.clip(0.5 + 0.25 * p.fields["large"] + 0.3 * (p.params["u1"] - 0.5), 0, 1)
    colour = _mix(WATER[None, :], TURBID[None, :], turbid) + p.params["colour"] * 0.4
    colour += 3.0 * p.fields["medium"][:, None]
    glint = (p.fields["fine"] > 3.1)[:, None] * np.array([60, 60, 60, 10], np.float32)
    return colour + glint, np.zeros(p.x.shape, np.float32)


def render_grass(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    colour = p.vegetation(GRASS)
    dryness = 0.35 * p.fields["medium"] + 0.2 * p.fields["large"] + (p.params["u1"] - 0.5)
    colour = _mix(colour, DRY_GRASS[None, :], 0.25 + 0.25 * dryness)
    colour += 6.0 * p.fields["fine"][:, None] + 4.0 * p.fields["blobs"][:, None]
    wet = (p.code == 95) & (p.fields["medium"] + 0.5 * p.fields["large"] > 0.9)
    colour[wet] = _mix(colour[wet], WATER[None, :], np.full(wet.sum(), 0.55))
    # a few lone shrubs and trees
    lone = p.fields["blobs"] + 0.3 * p.fields["medium"] > 2.8 - 1.7 * p.params["u2"]
    colour[lone] = _mix(colour[lone], SCRUB[None, :], np.full(lone.sum(), 0.8))
    return colour, np.where(lone, 2.0, 0.3).astype(np.float32)


def render_forest(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    crowns = p.fields["crowns"]
    evergreen_share = np.select([p.code == 42, p.code == 43], [0.85, 0.5], 0.12)
    evergreen = (p.fields["medium"] * 0.8 + p.fields["large"] * 0.6) < (evergreen_share - 0.5) * 2.2
    leaf = p.vegetation(LEAF)
    needle = p.vegetation(NEEDLE, jitter=0.6)
    colour = np.where(evergreen[:, None], needle, leaf)
    colour = colour * (1.0 + 0.22 * crowns[:, None]) + 4.0 * p.fields["fine"][:, None]
    gaps = crowns + 0.5 * p.fields["medium"] < -1.6 + 1.5 * p.params["u1"]
    understory = np.where(
        (p.params["u2"] < 0.5)[:, None], p.vegetation(DRY_GRASS, 0.5) * 0.8, SHADOW[None, :] * 1.3
    )
    gap_colour = np.where((p.code == 90)[:, None], WATER[None, :] * 1.2, understory)
    colour = np.where(gaps[:, None], gap_colour + 0.3 * p.params["colour"], colour)
    height = np.where(gaps, 0.0, 14.0 + 3.0 * crowns).astype(np.float32)
    return colour, height


def render_shrub(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    soil = _mix(SOIL[None, :], DARK_SOIL[None, :], 0.5 + 0.3 * p.fields["large"] + p.params["u2"] - 0.5)
    soil = _mix(soil, p.vegetation(DRY_GRASS, jitter=0.5), 0.3 + 0.3 * p.fields["medium"])
    soil += p.params["colour"] * 0.6 + 7.0 * p.fields["fine"][:, None]
    density = (
        0.08 + 0.62 * p.params["u1"]
    )  # overlaps grass with lone shrubs and open woodland  # share of ground under scrub
    shrubs = p.fields["blobs"] + 0.4 * p.fields["medium"] > _threshold_for_share(density)
    scrub = p.vegetation(SCRUB, jitter=0.5) * (1.0 + 0.15 * p.fields["blobs"][:, None])
    colour = np.where(shrubs[:, None], scrub, soil)
    return colour, np.where(shrubs, 2.0, 0.0).astype(np.float32)


def render_barren(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    kind = p.params["u1"]  # sand, gravel/soil, rock or quarry
    base = np.where(
        (kind < 0.33)[:, None],
        SAND[None, :],
        np.where((kind < 0.66)[:, None], GRAVEL[None, :], ROCK[None, :]),
    )
    colour = base + p.params["colour"] * 0.7
    grain = (
        0.06 * p.fields["medium"]
        + 0.05 * p.fields["large"]
        + 0.06 * p.fields["fine"]
        + 0.05 * p.fields["blobs"]
    )
    colour *= 1.0 + grain[:, None]
    u, _ = p.rotated()
    ripples = np.sin(u / (2.0 + 3.0 * p.params["u2"]) + 2.0 * p.fields["medium"])
    colour *= 1.0 + 0.04 * ripples[:, None] * (kind < 0.33)[:, None]
    # quarry benches and scattered boulders on rock
    benches = (kind > 0.8) & (np.mod(p.fields["large"] * 4.0, 1.0) < 0.12)
    colour[benches] *= 0.65
    boulders = (kind >= 0.66) & (p.fields["blobs"] > 2.2)
    colour[boulders] *= 0.7
    sparse = p.fields["blobs"] + 0.5 * p.fields["medium"] > _threshold_for_share(0.12 * p.params["u3"])
    colour[sparse] = _mix(colour[sparse], p.vegetation(SCRUB, 0.5)[sparse], np.full(sparse.sum(), 0.7))
    return colour, np.zeros(p.x.shape, np.float32)


def render_cultivated(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    u, v = p.rotated()
    field = p.params["field_size"]
    fu, fv = np.floor(u / field), np.floor(v / field)
    turn = hash_uniform(fu, fv, p.parcel, salt=1) < 0.35  # some fields run across
    rows_along = np.where(turn, v, u)
    stage = np.clip(p.params["stage"] + 0.35 * (hash_uniform(fu, fv, p.parcel, salt=2) - 0.5), 0.0, 1.0)
    pasture = p.code == 81
    period = np.where(pasture, 9.0 + 8.0 * p.params["u1"], 2.5 + 3.0 * p.params["u1"])
    rows = np.sin(2.0 * np.pi * rows_along / period)
    amplitude = np.where(pasture, 0.12, 0.2 + 1.6 * stage * (1.0 - stage))
    cover = stage + amplitude * rows + 0.12 * p.fields["medium"]
    soil = _mix(DARK_SOIL[None, :], SOIL[None, :], 0.5 + 0.4 * p.fields["large"])
    crop = np.where(pasture[:, None], p.vegetation(GRASS, 0.5), p.vegetation(CROP, 0.5))
    crop = _mix(crop, RIPE[None, :], (1.0 - p.green) * 0.6 * (~pasture))
    colour = _mix(soil, crop, cover) + 4.0 * p.fields["fine"][:, None]
    # farm tracks along field edges
    edge = np.minimum(np.mod(u, field), np.mod(v, field)) < 3.0
    colour[edge] = _mix(colour[edge], SOIL[None, :], np.full(edge.sum(), 0.7))
    return colour, np.zeros(p.x.shape, np.float32)


def render_developed(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
    lookup = np.zeros(256, np.float32)
    lookup[list(DEVELOPED_INTENSITY)] = list(DEVELOPED_INTENSITY.values())
    intensity = lookup[p.code]
    intensity = np.clip(intensity + 0.1 * (p.params["u1"] - 0.5), 0.05, 0.95)
    u, v = p.rotated()
    block_u = p.params["block"] * (1.35 - 0.5 * intensity)  # sparse suburbs: longer blocks
    block_v = block_u * (0.55 + 0.5 * p.params["u2"])
    road_width = 7.0 + 5.0 * intensity
    fu, fv = np.mod(u, block_u), np.mod(v, block_v)
    road = (fu < road_width) | (fv < road_width)
    # open space: most blocks are parks without buildings, with only few roads
    park = hash_uniform(np.floor(u / block_u), np.floor(v / block_v), p.parcel, salt=3) > 0.35 + intensity
    road &= ~(park & (fu >= road_width))
    lot_u = (block_u - road_width) / 2.0
    lot_v = 14.0 + 30.0 * intensity * p.params["u2"] + 8.0
    gu, gv = np.mod(fu - road_width, lot_u), np.mod(fv - road_width, lot_v)
    lot = (np.floor(u / block_u) * 2 + np.floor((fu - road_width) / lot_u), np.floor(v / lot_v))
    h_occ = hash_uniform(*lot, p.parcel, salt=4)
    h_roof = hash_uniform(*lot, p.parcel, salt=5)
    margin_u = lot_u * (0.38 - 0.3 * intensity) * (0.8 + 0.4 * h_roof)
    margin_v = lot_v * (0.3 - 0.22 * intensity)
    roof = (
        ~road
        & ~park
        & (h_occ < 0.45 + 0.6 * intensity)
        & (gu > margin_u)
        & (gu < lot_u - margin_u * 0.6)
        & (gv > margin_v)
        & (gv < lot_v - margin_v)
    )
    roof_colour = ROOFS[np.minimum((h_roof * len(ROOFS)).astype(int), len(ROOFS) - 1)]
    ridge = np.where(gu < (margin_u + lot_u - margin_u * 0.6) / 2.0, 1.08, 0.9)
    ground = _mix(
        p.vegetation(GRASS, 0.6), CONCRETE[None, :] * 0.85, intensity * 0.9 + 0.15 * p.fields["medium"]
    )
    trees = (p.fields["crowns"] + 0.6 * p.fields["medium"] > 0.6 + 1.6 * intensity) & ~road
    colour = np.where(
        trees[:, None], p.vegetation(LEAF, 0.5) * (1 + 0.2 * p.fields["crowns"][:, None]), ground
    )
    colour = np.where(road[:, None], ASPHALT[None, :] * (1.0 + 0.04 * p.fields["medium"][:, None]), colour)
    colour = np.where(roof[:, None], roof_colour * ridge[:, None], colour)
    colour += 5.0 * p.fields["fine"][:, None]
    height = np.select([roof, trees], [6.0 + 10.0 * intensity, 12.0], 0.0).astype(np.float32)
    return colour, height


RENDERERS = {
    "water": render_water,
    "herbaceous": render_grass,
    "forest": render_forest,
    "shrub": render_shrub,
    "barren": render_barren,
    "cultivated": render_cultivated,
    "developed": render_developed,
}


def _threshold_for_share(share: np.ndarray) -> np.ndarray:
    """Threshold on a ~N(0, 1.08) field that leaves about ``share`` of pixels above it."""
    return (-ndtri(np.clip(share, 0.01, 0.99)) * 1.08).astype(np.float32)


def cast_shadows(image: np.ndarray, height: np.ndarray, sun: tuple[int, int], strength: float) -> None:
    """Darken pixels that a taller neighbour towards the sun hides (in place); ``sun`` is the
    (row, col) step towards the sun."""
    shaded = np.zeros(height.shape, bool)
    for step in (1, 2, 3, 4):
        shifted = np.roll(height, (-sun[0] * step, -sun[1] * step), axis=(0, 1))
        shaded |= shifted > height + 1.5 * step
    image[:, shaded] *= strength


@dataclass(frozen=True)
class Look:
    """How one acquisition looks: season, sensor calibration, haze, illumination, noise."""

    green: float  # 1 lush early summer, 0 dry late summer
    gain: tuple[float, float, float, float]
    offset: tuple[float, float, float, float]
    ramp: float  # brightness change across the scene
    noise: float  # sensor noise (DN)
    blur: float  # optics / resampling softness (px)
    sun: tuple[int, int]


def random_look(rng: np.random.Generator, green: float) -> Look:
    return Look(
        green=green,
        gain=tuple(float(g) for g in 1.0 + rng.normal(0.0, 0.09, 4)),
        offset=tuple(float(o) for o in rng.normal(0.0, 7.0, 4) + np.array([0, 4, 16, 0]) * rng.uniform()),
        ramp=float(rng.uniform(-0.12, 0.12)),
        noise=float(rng.uniform(3.0, 7.0)),
        blur=float(rng.uniform(0.4, 1.1)),
        sun=(int(rng.choice([-1, 1])), int(rng.choice([-1, 1]))),
    )


def render_scene(
    codes: np.ndarray,
    parcels: np.ndarray,
    parcel_params: dict[str, np.ndarray],
    fields: RegionFields,
    look: Look,
    rng: np.random.Generator,
) -> np.ndarray:
    """A (4, rows, cols) uint8 image of a map of NLCD codes; ``parcels`` indexes ``parcel_params``."""
    rows, cols = codes.shape
    # ragged, slightly mixed borders: draw each pixel from a nearby position
    yy, xx = np.indices(codes.shape, dtype=np.int32)
    jy = np.clip(yy + np.rint(2.5 * fields.blobs).astype(np.int32), 0, rows - 1)
    jx = np.clip(xx + np.rint(2.5 * fields.crowns).astype(np.int32), 0, cols - 1)
    codes, parcels = codes[jy, jx], parcels[jy, jx]
    del jy, jx
    # hedgerows along the borders of some open parcels
    border = ndimage.maximum_filter(parcels, 7) != ndimage.minimum_filter(parcels, 7)
    open_land = np.isin(codes, [52, 51, 71, 81, 82])
    hedge = border & open_land & (parcel_params["u3"][parcels] < 0.4)
    codes = np.where(hedge, np.uint8(41), codes)

    image = np.zeros((4, rows, cols), np.float32)
    height = np.zeros((rows, cols), np.float32)
    kinds = np.vectorize(KIND_OF_CODE.get, otypes=[object])(np.unique(codes))
    for kind in sorted(set(kinds)):
        kind_codes = [c for c, k in KIND_OF_CODE.items() if k == kind]
        mask = np.isin(codes, kind_codes)
        parcel = parcels[mask]
        pixels = Pixels(
            x=xx[mask].astype(np.float32),
            y=yy[mask].astype(np.float32),
            code=codes[mask],
            parcel=parcel,
            params={name: values[parcel] for name, values in parcel_params.items()},
            fields={name: getattr(fields, name)[mask] for name in RegionFields.__dataclass_fields__},
            green=look.green,
        )
        colour, tall = RENDERERS[kind](pixels)
        image[:, mask] = colour.T
        height[mask] = tall
    cast_shadows(image, height, look.sun, 0.6)
    image = ndimage.gaussian_filter(image, (0, look.blur, look.blur))
    ramp = 1.0 + look.ramp * (xx / cols - 0.5)
    image *= np.asarray(look.gain, np.float32)[:, None, None] * ramp[None]
    image += np.asarray(look.offset, np.float32)[:, None, None]
    image += rng.normal(0.0, look.noise, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
