"""Sample scene figures: generation seconds, and what data_preparation and development_inference can
get out of it: >= 90% pure 224 m tiles per class and region after the 30 m Albers NLCD round trip,
and the tiles of the change region that the generator developed.

Usage: .venv/bin/python benchmarks/sample_scene.py [--env base|test]   (writes only to a temp folder)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

from _project import project_catalog  # noqa: E402

from landuse_kedro.classes import class_lookup  # noqa: E402
from landuse_kedro.datasets import GeoTiffDataset  # noqa: E402
from landuse_kedro.pipelines.sample_scene import nodes  # noqa: E402
from landuse_kedro.raster import (  # noqa: E402
    labels_on_grid,
    plurality,
    tile_value_counts,
    to_classes,
)

PROJECT = Path(__file__).resolve().parents[1]
TILE, PURITY, CHANGE_REGION = 224, 0.9, "middlesex"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="base")
    env = parser.parse_args().env
    with project_catalog(PROJECT, env) as catalog:
        params = catalog.load("parameters")
    config, land_cover_params = params["sample_scene"], params["land_cover"]

    start = time.perf_counter()
    land_cover = nodes.generate_land_cover(config)
    nlcd = nodes.make_nlcd_rasters(land_cover, config)
    layout_s = time.perf_counter() - start
    scenes = nodes.render_naip_scenes(land_cover, config)
    start = time.perf_counter()
    first = next(iter(scenes.values()))()
    render_s = time.perf_counter() - start
    print(
        f"land cover + NLCD: {layout_s:.1f} s; one {first.width} x {first.height} scene: {render_s:.1f} s "
        f"(x {len(scenes)} scenes)"
    )

    classes = land_cover_params["classes"]
    lut = class_lookup(land_cover_params["nlcd_to_class"], classes)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for key, raster in nlcd.items():
            GeoTiffDataset(filepath=f"{folder}/{key}.tif").save(raster)
        sources = {key: GeoTiffDataset(filepath=f"{folder}/{key}.tif").load() for key in nlcd}
        for name, region in land_cover.items():
            for (year_key, year), nlcd_year in zip(config["years"].items(), config["nlcd_years"].values()):
                size = region.scene_size
                codes = labels_on_grid(
                    sources[f"nlcd_{nlcd_year}"], region.crs, region.scene_transform, size, size
                )
                winner, purity = plurality(
                    tile_value_counts(to_classes(codes, lut, nodata=0), TILE), len(classes)
                )
                counts = np.bincount(winner[purity >= PURITY], minlength=len(classes))
                rows.append({"region": name, "year": year, **dict(zip(classes, counts.tolist()))})
    table = pd.DataFrame(rows).set_index(["region", "year"])
    table["total"] = table.sum(axis=1)
    tiles = (config["scene_size"] // TILE) ** 2
    print(f"\n>= {PURITY:.0%} pure {TILE} m tiles per class (of {tiles} tiles per scene):")
    print(table.to_string())
    print("\nall scenes:", table[classes].sum().to_dict())

    if CHANGE_REGION in land_cover:
        truth = land_cover[CHANGE_REGION].newly_developed()
        share = tile_value_counts(truth, TILE, 2)[..., 1] / TILE**2
        print(
            f"\n{CHANGE_REGION}: newly developed tiles: {(share >= 0.999).sum()} fully, "
            f"{(share >= 0.5).sum()} at least half, {((share > 0) & (share < 0.5)).sum()} partly (< half)"
        )


if __name__ == "__main__":
    main()
