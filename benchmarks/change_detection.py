"""Precision and recall of development_inference's change candidates against the sample scene's truth.

    .venv/bin/python benchmarks/change_detection.py [--env local] [--min-changed 0.5] [--project DIR] \
        [--sweep]

Run after ``kedro run --pipelines development_inference`` on the sample scene (the generator knows
where it developed land: ``sample_change_truth``, 1 = became developed, on the scene grid). Everything
is read through the Kedro catalog of this project (a KedroSession in the project folder).

Tile-level truth: a tile "became developed" when at least ``--min-changed`` (default 0.5) of its
pixels did, i.e. when a tile-sized classifier should call it Developed now while it was not before.
Tiles with some change but less than that are neither counted as missed nor, when flagged, excused:
a flagged tile with 10% new development is a false positive at the default. Their number is printed
so the threshold's effect can be judged.

precision = candidates that became developed / candidates
recall    = tiles that became developed and are candidates / tiles that became developed
(the walkthrough's own candidates were about one third truly developed.)

``--sweep`` also prints both figures for other candidate settings (threshold, older classes and
their minimum share of the tile, raw or smoothed prediction, smoothing centre weight), recomputed from the
saved per-tile classes with the pipeline's own functions: the trade-off behind the chosen parameters.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

from _project import project_catalog  # noqa: E402

from landuse_kedro.pipelines.development_inference.analysis import (  # noqa: E402
    change_candidates,
    class_codes,
    smooth_classes,
    to_grid,
)
from landuse_kedro.pipelines.development_inference.params import map_classes, region_names  # noqa: E402
from landuse_kedro.pipelines.development_inference.reference import changed_share  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def precision_recall(candidates: set[str], became_developed: set[str]) -> tuple[float | None, float]:
    hits = len(candidates & became_developed)
    return (hits / len(candidates) if candidates else None), hits / max(len(became_developed), 1)


def sweep(tiles: pd.DataFrame, became_developed: set[str], map_classes: list[str], to_class: str) -> None:
    """P/R of other candidate settings, with the pipeline's own smoothing and selection."""
    codes = class_codes(map_classes)
    names = np.asarray([None, *map_classes], dtype=object)
    raw = to_grid(tiles, "predicted_class", codes)
    print(
        "\nprediction  centre  older classes            min share  threshold  candidates  precision  recall"
    )
    for prediction, weight in (("predicted", None), ("smoothed", 2)):
        column = (
            tiles["predicted_class"]
            if weight is None
            else pd.Series(
                names[smooth_classes(raw, len(map_classes), weight)[tiles["row"], tiles["col"]]],
                index=tiles.index,
            )
        )
        variant = tiles.assign(variant=column)
        for from_classes in (["Undeveloped"], ["Undeveloped", "Cultivated"]):
            for share in (0.0, 0.5, 0.6, 0.7):
                for threshold in (0.5, 0.8, 0.95):
                    chosen = set(
                        change_candidates(
                            variant,
                            from_classes,
                            to_class,
                            threshold,
                            prediction="variant",
                            min_older_share=share,
                        )["tile_id"]
                    )
                    precision, recall = precision_recall(chosen, became_developed)
                    shown = "-" if precision is None else f"{precision:.3f}"
                    print(
                        f"{prediction:<11} {weight or '-':<7} {'+'.join(from_classes):<24} {share:<10} "
                        f"{threshold:<10} {len(chosen):<11} {shown:<10} {recall:.3f}"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=PROJECT, help="Kedro project folder (default: this one)"
    )
    parser.add_argument("--env", default=None, help="Kedro environment (default: the project's, local)")
    parser.add_argument("--sweep", action="store_true", help="also print other candidate settings")
    parser.add_argument(
        "--min-changed",
        type=float,
        default=0.5,
        help="share of a tile's pixels that must have become developed (default 0.5)",
    )
    args = parser.parse_args()

    with project_catalog(args.project, args.env) as catalog:
        params = catalog.load("parameters")
        options, land_cover = params["development_inference"], params["land_cover"]
        region = region_names(options)[0]
        truth_rasters = catalog.load("sample_change_truth")
        if region not in truth_rasters:
            raise SystemExit(
                f"No sample_change_truth for region {region!r} (have {sorted(truth_rasters)}): "
                "this check needs the generated sample scene."
            )
        truth = truth_rasters[region]()
        tiles = catalog.load("development_tile_classes")
        tiles = tiles[tiles["region"] == region]
        geojson = catalog.load("change_candidates")[region]()

    if tiles["crs"].iloc[0] != truth.crs.to_string():
        raise SystemExit(f"Tiles are in {tiles['crs'].iloc[0]}, the truth in {truth.crs}: cannot compare.")
    tiles = tiles.assign(changed=changed_share(tiles, truth))
    candidates = {feature["properties"]["tile_id"] for feature in geojson["features"]}
    unknown = candidates - set(tiles["tile_id"])
    if unknown:
        raise SystemExit(
            f"{len(unknown)} candidates are not tiles of the region, e.g. {sorted(unknown)[:3]}."
        )
    tiles["candidate"] = tiles["tile_id"].isin(candidates)
    tiles["became_developed"] = tiles["changed"] >= args.min_changed

    true_positives = int((tiles.candidate & tiles.became_developed).sum())
    precision = true_positives / max(int(tiles.candidate.sum()), 1)
    recall = true_positives / max(int(tiles.became_developed.sum()), 1)
    partial = tiles[(tiles.changed > 0) & ~tiles.became_developed]
    missed = tiles[tiles.became_developed & ~tiles.candidate]

    settings = options["candidates"]
    if args.sweep:
        sweep(
            tiles,
            set(tiles.loc[tiles.became_developed, "tile_id"]),
            map_classes(land_cover, options),
            settings.get("to_class", "Developed"),
        )
    print(f"region {region}: {len(tiles)} tiles, {int(tiles['error'].notna().sum())} failed to score")
    print(
        f"candidates: older {settings['from_classes']} "
        f"(>= {settings.get('min_older_share', 0.0)} of the tile) "
        f"-> {settings.get('to_class', 'Developed')} "
        f"({settings.get('prediction', 'predicted')} prediction), "
        f"probability >= {settings['min_probability']}"
    )
    print(f"tile truth: >= {args.min_changed:.0%} of the tile's pixels became developed")
    print(
        f"tiles that became developed: {int(tiles.became_developed.sum())}; "
        f"candidates: {int(tiles.candidate.sum())}; "
        f"true positives: {true_positives}"
    )
    print(
        f"precision {precision:.3f}   recall {recall:.3f}"
        if tiles.candidate.any()
        else f"precision undefined (no candidate)   recall {recall:.3f}"
    )
    print(
        f"partly changed tiles (0 < share < {args.min_changed:.0%}): {len(partial)}, "
        f"of which flagged: {int(partial.candidate.sum())}"
    )
    if len(missed):
        print("missed tiles by older label / prediction:")
        print(missed.groupby(["older_class", "predicted_class"], dropna=False).size().to_string())
    false = tiles[tiles.candidate & ~tiles.became_developed]
    if len(false):
        print(
            "false candidates (share changed):",
            ", ".join(f"{t.tile_id} ({t.changed:.2f})" for t in false.itertuples()),
        )


if __name__ == "__main__":
    main()
