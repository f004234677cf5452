"""How often the newly developed area's 95 % interval covers the true area, over many draws of the sample.

    .venv/bin/python benchmarks/area_estimation.py [--env local] [--project DIR] [--draws 200]

Run after ``kedro run`` (or ``--pipelines development_inference``) on the sample scene: the generator
knows where it developed land (``sample_change_truth``). For each region of the run and each seed
0..draws-1, the pipeline's own functions draw the reference sample (``sample_region``, as the node
``draw_reference_sample`` does, with ``reference_sample.seed`` = the seed), label it from the truth
and estimate the area (``estimate_region``, as ``estimate_developed_area`` does). Printed per region:
the true area (tiles that became developed, the quantity estimated, and the pixels that did), the
map's count, the mean estimate, the share of intervals that cover the true area (a correct interval
does about 95 %) and the interval's mean width. Everything is read through the project's Kedro catalog.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _project import project_catalog  # noqa: E402

from landuse_kedro.pipelines.development_inference.params import (  # noqa: E402
    map_classes,
    prediction_column,
    region_names,
)
from landuse_kedro.pipelines.development_inference.reference import (  # noqa: E402
    NEW,
    estimate_region,
    sample_region,
    truth_labels,
)

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=PROJECT, help="Kedro project folder (default: this one)"
    )
    parser.add_argument("--env", default=None, help="Kedro environment (default: the project's, local)")
    parser.add_argument("--draws", type=int, default=200, help="seeds of the sample draw (default 200)")
    args = parser.parse_args()

    with project_catalog(args.project, args.env) as catalog:
        params = catalog.load("parameters")
        options, land_cover = params["development_inference"], params["land_cover"]
        truth = catalog.load("sample_change_truth")
        tiles = catalog.load("development_tile_classes")
        candidates = catalog.load("change_candidates_table")
        regions = [region for region in region_names(options) if region in truth]
        truth_rasters = {region: truth[region]() for region in regions}  # relative paths: load here
        candidate_tables = {region: candidates[region]() for region in regions}
    if not regions:
        raise SystemExit(
            f"No sample_change_truth for the run's regions {region_names(options)}: needs the sample scene."
        )
    classes = [NEW, *map_classes(land_cover, options)]
    column = prediction_column(options)
    for region in regions:
        options_region = copy.deepcopy(options) | {"regions": [region]}
        region_tiles = tiles[tiles["region"] == region]
        covered, widths, estimates, reports = [], [], [], []
        for seed in range(args.draws):
            options_region["reference_sample"]["seed"] = seed
            sample = sample_region(region, region_tiles, candidate_tables[region], land_cover, options_region)
            labelled = sample.assign(reference_class=truth_labels(sample, truth_rasters[region]))
            report = estimate_region(
                region, labelled, region_tiles, classes, "sample_scene truth", truth_rasters[region], column
            )
            new = report["new_development_ha"]
            covered.append(report["truth"]["interval_covers_truth"])
            widths.append(2 * new["ci95"])
            estimates.append(new["estimate"])
            reports.append(report)
        first = reports[0]
        print(
            f"region {region}: {len(region_tiles)} tiles of {first['tile_area_ha']:.4f} ha, "
            f"sample {first['sample_tiles']} tiles ({args.draws} draws)"
        )
        print(
            f"true newly developed area: {first['truth']['new_development_tiles_ha']:.2f} ha of tiles "
            f"(>= 50% changed), {first['truth']['new_development_pixels_ha']:.2f} ha of pixels; "
            f"mapped (candidates): {first['new_development_ha']['mapped']:.2f} ha"
        )
        print(
            f"estimate: mean {np.mean(estimates):.2f} ha; 95% interval covers the true area in "
            f"{np.mean(covered):.1%} of draws; mean width {np.mean(widths):.2f} ha"
        )


if __name__ == "__main__":
    main()
