"""data_preparation: NAIP scenes + NLCD land cover -> labelled, balanced, region-split PNG tiles.

The driver only plans (scene headers, grids). Spark tasks label blocks of tile windows and, through
the catalog's dataset, write the selected tiles' PNGs; the driver holds one small row per tile.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landuse_kedro import scene_keys
from landuse_kedro.classes import LandCover
from landuse_kedro.failures import check_failure_rate, failure_counts
from landuse_kedro.parameters import as_list
from landuse_kedro.pipelines.data_preparation.rejects import REJECT_REASONS, finish_candidates
from landuse_kedro.raster import WindowedRaster
from landuse_kedro.tiling import (
    WINDOW_PLACE,
    ScenePlan,
    TileWindow,
    nearest_year,
    plan_scene,
)
from landuse_kedro.window_jobs import label_windows

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")

MANIFEST_COLUMNS = [
    "tile_id",
    "split",
    "region",
    "year",
    "class_name",
    "label_share",
    *WINDOW_PLACE,
    "crs",
    "partition",
    "scene",
    "nlcd_year",
]
_NLCD_KEY = re.compile(r"^nlcd_(?P<year>\d{4})$")

Loaders = Mapping[str, Callable[[], WindowedRaster]]


# ------------------------------------------------------------------ planning and labelling


def plan_scenes(
    naip_scenes: Loaders, nlcd_rasters: Loaders, land_cover: dict[str, Any], tiling: dict[str, Any]
) -> dict[str, ScenePlan]:
    """Fix each scene's tiling grid and pair it with the NLCD edition of the nearest year, from headers
    only, so the driver stays small whatever the scenes' size.

    Args:
        naip_scenes: ``naip_scenes``, ``<region>_<year>`` -> lazy raster loader.
        nlcd_rasters: ``nlcd_rasters``, ``nlcd_<year>`` -> lazy raster loader.
        land_cover: ``params:land_cover`` (classes, the NLCD legend and ``max_unknown_fraction``).
        tiling: ``params:tiling`` (``tile_size``, ``resolution``, ``target_crs``, ``limits``).

    Returns:
        ``scene_plans``: scene key -> :class:`ScenePlan` (grid, tile grid, NLCD edition, class table).

    Raises:
        ValueError: No scenes or no NLCD rasters; a key not named ``<region>_<year>`` or ``nlcd_<year>``;
            NLCD that is not uint8 with a CRS; a scene with under 3 bands or not uint8, outside its
            NLCD or smaller than a tile; a scene or NLCD past ``tiling.limits``; NLCD codes outside
            the legend under a scene above ``land_cover.max_unknown_fraction``; or a bad ``land_cover``.
    """
    if not naip_scenes:
        raise ValueError("No NAIP scenes: put <region>_<year>.tif files in naip_scenes (01_raw/naip).")
    labels = _nlcd_by_year(nlcd_rasters)
    land = LandCover.from_params(land_cover)
    lut = land.nlcd_lookup()
    plans = {}
    for key in sorted(naip_scenes):
        _, year = scene_keys.parse_scene_key(key)
        nlcd_year = nearest_year(year, labels)
        plans[key] = plan_scene(
            key,
            naip_scenes[key](),
            labels[nlcd_year],
            lut,
            land.classes,
            tiling,
            labels_key=scene_keys.nlcd_key(nlcd_year),
            max_unknown_fraction=land.max_unknown_fraction,
        )
    return plans


def label_tiles(scene_plans: dict[str, ScenePlan], data_preparation: dict[str, Any]) -> pd.DataFrame:
    """Label every full tile of every scene, so the later steps and the report choose from one table.
    Spark tasks label blocks of windows; the driver gets one small row per tile.

    Args:
        scene_plans: ``scene_plans`` from :func:`plan_scenes`.
        data_preparation: ``params:data_preparation`` (``min_label_share``).

    Returns:
        ``labelled_tiles`` (saved as ``tile_candidates`` by :func:`write_manifest`, after the tiles):
        one row per tile with scene, region, year, NLCD year, majority class, label_share and
        ``reject_reason`` (null when usable; ``unreadable`` with ``read_error`` for a window whose
        pixels cannot be decoded).
    """
    frame = label_windows(scene_plans)
    frame = finish_candidates(frame, scene_plans, float(data_preparation.get("min_label_share", 0.9)))
    keys = frame.pop("scene")
    frame.insert(1, "scene", keys)
    region_year = {
        key: scene_keys.parse_scene_key(key) for key in scene_plans
    }  # once per scene, not per tile
    frame.insert(2, "region", keys.map({key: region for key, (region, _) in region_year.items()}))
    frame.insert(3, "year", keys.map({key: year for key, (_, year) in region_year.items()}))
    frame.insert(
        4, "nlcd_year", keys.map({k: scene_keys.nlcd_year(p.labels_key) for k, p in scene_plans.items()})
    )
    for key, scene in frame.groupby("scene", sort=True):
        reasons = scene["reject_reason"].value_counts().to_dict()
        logger.info(
            "Scene %s (NLCD %d): %d tiles seen, %d usable; rejected %s",
            key,
            scene["nlcd_year"].iloc[0],
            len(scene),
            int(scene["reject_reason"].isna().sum()),
            reasons or "none",
        )
    return frame


def _nlcd_by_year(nlcd_rasters: Loaders) -> dict[int, WindowedRaster]:
    if not nlcd_rasters:
        raise ValueError("No NLCD rasters: put nlcd_<year>.tif files in nlcd_rasters (01_raw/nlcd).")
    labels = {}
    for key in sorted(nlcd_rasters):
        match = _NLCD_KEY.match(key)
        if not match:
            raise ValueError(f"NLCD raster '{key}' is not named nlcd_<year> (e.g. nlcd_2016).")
        labels[int(match["year"])] = nlcd_rasters[key]()  # checked by plan_scene where paired
    return labels


# ------------------------------------------------------------------ selection


def select_tiles(
    tile_candidates: pd.DataFrame, land_cover: dict[str, Any], data_preparation: dict[str, Any]
) -> pd.DataFrame:
    """Choose the tiles to train and validate on: usable tiles split by whole regions (no region in both
    splits, so validation measures generalisation to new ground) and balanced by seeded down-sampling
    to the rarest class.

    Args:
        tile_candidates: ``tile_candidates`` from :func:`label_tiles`.
        land_cover: ``params:land_cover`` (the classes to balance).
        data_preparation: ``params:data_preparation`` (``validation_regions``, ``max_tiles_per_class``,
            ``seed``).

    Returns:
        ``tile_selection``: the chosen candidates with ``split`` and ``partition``
        (``<split>/<Class>/<tile_id>``), sorted by partition.

    Raises:
        ValueError: ``validation_regions`` is empty, names an unknown region or every region, or a split
            has no usable tile of some class.
    """
    classes = list(LandCover.from_params(land_cover).classes)
    regions = sorted(tile_candidates["region"].unique())
    validation = [str(name) for name in as_list(data_preparation.get("validation_regions"))]
    unknown = sorted(set(validation) - set(regions))
    if unknown or not validation:
        raise ValueError(
            f"validation_regions {unknown or validation} must name some of the scenes' regions {regions}."
        )
    if not set(regions) - set(validation):
        raise ValueError(f"Every region {regions} is a validation region: none is left to train on.")
    logger.info(
        "Validation regions: %s; training regions: %s",
        ", ".join(sorted(validation)),
        ", ".join(sorted(set(regions) - set(validation))),
    )
    usable = tile_candidates[tile_candidates["reject_reason"].isna()].sort_values("tile_id")
    usable = usable.assign(split=np.where(usable["region"].isin(validation), "validation", "train"))
    rng = np.random.default_rng(int(data_preparation.get("seed", 0)))
    cap = data_preparation.get("max_tiles_per_class")
    chosen = []
    for split in SPLITS:
        in_split = usable[usable["split"] == split]
        counts = in_split["class_name"].value_counts().reindex(classes, fill_value=0)
        if (counts == 0).any():
            raise ValueError(
                f"No usable {split} tile of class(es) {list(counts[counts == 0].index)} after filtering "
                f"(regions {sorted(in_split['region'].unique()) or regions}, min_label_share "
                f"{data_preparation.get('min_label_share', 0.9)}); usable tiles per class: "
                f"{counts.to_dict()}."
            )
        per_class = int(counts.min() if cap is None else min(counts.min(), int(cap)))
        for name in classes:
            of_class = in_split[in_split["class_name"] == name]
            picks = np.sort(rng.choice(len(of_class), size=per_class, replace=False))
            chosen.append(of_class.iloc[picks])
    selection = pd.concat(chosen, ignore_index=True)
    selection["partition"] = selection["split"] + "/" + selection["class_name"] + "/" + selection["tile_id"]
    return selection.sort_values("partition", ignore_index=True)


# ------------------------------------------------------------------ writing


def export_tiles(tile_selection: pd.DataFrame, scene_plans: dict[str, ScenePlan]) -> dict[str, TileWindow]:
    """Hand the selected tiles to the catalog as lazy windows, so Spark workers read and write them in
    parallel; they come grouped by scene in row order, so a task reads neighbouring windows from one
    open scene.

    Args:
        tile_selection: ``tile_selection`` from :func:`select_tiles`.
        scene_plans: ``scene_plans`` from :func:`plan_scenes`.

    Returns:
        ``model_input_tiles``: ``<split>/<Class>/<tile_id>`` -> a :class:`TileWindow` (the tile's RGB,
        read when saved).
    """
    ordered = tile_selection.sort_values(["scene", "row", "col"])
    logger.info("Writing %d tiles from %d scenes", len(ordered), ordered["scene"].nunique())
    shipped = {key: plan.shippable() for key, plan in scene_plans.items()}  # read by Spark tasks
    return {
        tile.partition: TileWindow(shipped[tile.scene], tile.row, tile.col) for tile in ordered.itertuples()
    }


def write_manifest(
    tile_selection: pd.DataFrame, model_input_tiles: Mapping[str, Any], labelled_tiles: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Save the manifest and the candidate table only after the tiles (their folder is replaced on
    every run) and only when the files written are exactly the selected tiles, so a manifest never
    names a missing tile and a failed run leaves the previous run's tiles, manifest and candidates.

    Args:
        tile_selection: ``tile_selection`` from :func:`select_tiles`.
        model_input_tiles: ``model_input_tiles`` as saved (only its keys are read).
        labelled_tiles: ``labelled_tiles`` from :func:`label_tiles`.

    Returns:
        ``tile_manifest``: the selection's ``MANIFEST_COLUMNS``; ``tile_candidates``: ``labelled_tiles``.

    Raises:
        ValueError: ``model_input_tiles`` holds tiles that were not selected or lacks selected ones.
    """
    expected, written = set(tile_selection["partition"]), set(model_input_tiles)
    if expected != written:
        raise ValueError(
            f"model_input_tiles holds {len(written - expected)} unexpected and lacks "
            f"{len(expected - written)} selected tiles, e.g. "
            f"{sorted(written ^ expected)[:3]}."
        )
    return tile_selection[MANIFEST_COLUMNS].reset_index(drop=True), labelled_tiles


# ------------------------------------------------------------------ report


def summarise_preparation(
    tile_candidates: pd.DataFrame,
    tile_manifest: pd.DataFrame,
    land_cover: dict[str, Any],
    tiling: dict[str, Any],
    data_preparation: dict[str, Any],
    scene_plans: Mapping[str, ScenePlan],
) -> dict[str, Any]:
    """Account for every tile: seen, rejected (why), usable, kept per split and class.

    Args:
        tile_candidates: ``tile_candidates`` from :func:`label_tiles`.
        tile_manifest: ``tile_manifest`` from :func:`write_manifest`.
        land_cover: ``params:land_cover`` (the classes).
        tiling: ``params:tiling`` (``tile_size``).
        data_preparation: ``params:data_preparation`` (``min_label_share``).
        scene_plans: ``scene_plans`` from :func:`plan_scenes` (the NLCD codes outside the legend).

    Returns:
        ``preparation_report``: totals (seen, rejected per reason, usable, balanced out, kept per split
        and class), failure reasons grouped by cause, the regions of each split, dropped pixels, the
        NLCD pixels outside the legend per scene and code (NLCD pixels, counted when planned) and
        per-scene counts.
    """
    classes = list(LandCover.from_params(land_cover).classes)
    usable = tile_candidates["reject_reason"].isna()
    kept = tile_manifest.groupby(["split", "class_name"]).size()
    per_scene = (
        tile_candidates.assign(usable=usable)
        .groupby("scene")
        .agg(nlcd_year=("nlcd_year", "first"), seen=("tile_id", "size"), usable=("usable", "sum"))
    )
    per_scene["kept"] = tile_manifest["scene"].value_counts().reindex(per_scene.index, fill_value=0)
    return {
        "tile_size": int(tiling["tile_size"]),
        "min_label_share": float(data_preparation.get("min_label_share", 0.9)),
        "tiles_seen": len(tile_candidates),
        "rejected": {
            reason: int((tile_candidates["reject_reason"] == reason).sum()) for reason in REJECT_REASONS
        },
        "usable": int(usable.sum()),
        "balanced_out": int(usable.sum()) - len(tile_manifest),
        "kept": {split: {name: int(kept.get((split, name), 0)) for name in classes} for split in SPLITS},
        "kept_total": len(tile_manifest),
        "regions": {
            split: sorted(tile_manifest.loc[tile_manifest.split == split, "region"].unique())
            for split in SPLITS
        },
        "failure_reasons": failure_counts(tile_candidates["read_error"]),
        "dropped_pixels": int(tile_candidates["dropped_pixels"].sum()),
        "unknown_nlcd_codes": {
            key: {
                "nlcd": plan.labels_key,
                "pixels": plan.label_pixels,
                "codes": {str(c): n for c, n in plan.unknown_codes},
            }
            for key, plan in sorted(scene_plans.items())
            if plan.unknown_codes
        },
        "per_scene": {scene: {k: int(v) for k, v in row.items()} for scene, row in per_scene.iterrows()},
    }


def check_unreadable_windows(
    tile_candidates: pd.DataFrame, preparation_report: dict[str, Any], data_preparation: dict[str, Any]
) -> None:
    """Fail the run, once its outputs and report are written, when more than
    ``max_failed_fraction`` of the windows could not be read: a damaged copy or failing storage
    must not pass as a run with a few rejects.

    Args:
        tile_candidates: ``tile_candidates`` (its ``read_error`` column).
        preparation_report: ``preparation_report`` (``tiles_seen``; taken so the check runs after it
            is saved).
        data_preparation: ``params:data_preparation`` (``max_failed_fraction``, default 0.05).

    Raises:
        RuntimeError: Too many unreadable windows; names the commonest reasons.
    """
    check_failure_rate(
        int(preparation_report["tiles_seen"]),
        tile_candidates["read_error"].dropna().tolist(),
        float(data_preparation.get("max_failed_fraction", 0.05)),
        "tile windows",
        "data_preparation.max_failed_fraction",
    )


def plot_preparation_report(preparation_report: dict[str, Any]) -> Figure:
    """Show where the tiles went and the kept tiles per class and split, as bar charts.

    Args:
        preparation_report: ``preparation_report`` from :func:`summarise_preparation`.

    Returns:
        ``preparation_report_plot``: the figure.
    """
    figure = Figure(figsize=(11, 4), layout="constrained")
    fate, kept = figure.subplots(1, 2, width_ratios=[1, 2])
    outcomes = {
        "kept": preparation_report["kept_total"],
        "balanced out": preparation_report["balanced_out"],
        **{f"rejected:\n{k}": v for k, v in preparation_report["rejected"].items()},
    }
    fate.barh(
        list(outcomes),
        list(outcomes.values()),
        color=["tab:green", "tab:olive"] + ["tab:red"] * (len(outcomes) - 2),
    )
    fate.invert_yaxis()
    fate.set_title(f"{preparation_report['tiles_seen']} tiles seen")
    fate.set_xlabel("tiles")
    classes = list(preparation_report["kept"]["train"])
    x = np.arange(len(classes))
    for offset, split in zip((-0.2, 0.2), SPLITS):
        kept.bar(
            x + offset,
            [preparation_report["kept"][split][c] for c in classes],
            width=0.4,
            label=f"{split} ({', '.join(preparation_report['regions'][split])})",
        )
    kept.set_xticks(x, classes)
    kept.set_ylabel("tiles")
    kept.set_title("Kept tiles per class (balanced per split)")
    kept.legend()
    return figure
