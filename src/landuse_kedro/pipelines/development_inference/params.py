"""What ``params:development_inference`` decides for every node: the run's regions and the maps' classes.

Each node reads the block as given; these helpers are the one place that turns it into the regions
(in order, with their tiles and saved partitions) and the classes of the maps, so every output agrees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from landuse_kedro.classes import DROPPED, LandCover
from landuse_kedro.parameters import as_list

WATER = "Water"


# ------------------------------------------------------------------ classes of the maps


def map_classes(land_cover: dict[str, Any], development_inference: dict[str, Any]) -> list[str]:
    """The classes of the maps, in code order (code i is ``map_classes[i - 1]``).

    Args:
        land_cover: ``params:land_cover``.
        development_inference: ``params:development_inference`` (``water``: keep or mask).

    Returns:
        The 3-class names (``LandCover.three_class_names``), plus Water when ``water: keep``.
    """
    return _map_classes(LandCover.from_params(land_cover), development_inference)


def _map_classes(land: LandCover, development_inference: dict[str, Any]) -> list[str]:
    names = list(land.three_class_names)
    return names + [WATER] if _water_mode(development_inference) == "keep" else names


def prediction_column(development_inference: dict[str, Any]) -> str:
    """The ``development_tile_classes`` column that ``candidates.prediction`` names: the raw or the
    smoothed newer prediction (the candidates, their gallery and the reference strata all use it)."""
    return {"predicted": "predicted_class", "smoothed": "smoothed_class"}[
        development_inference["candidates"].get("prediction", "predicted")
    ]


def _water_mode(development_inference: dict[str, Any]) -> str:
    mode = development_inference.get("water", "mask")
    if mode not in ("keep", "mask"):
        raise ValueError(f"development_inference.water must be 'keep' or 'mask', got {mode!r}.")
    return mode


def older_label_lookup(land_cover: dict[str, Any], development_inference: dict[str, Any]) -> np.ndarray:
    """uint8 table NLCD code -> index in :func:`map_classes`: land_cover's NLCD classes regrouped to
    three, ``land_cover.water_codes`` to Water (or DROPPED when masked, so a mostly-water tile is
    masked), no-data codes NO_LABEL and codes outside the legend UNKNOWN (a tile on them has no older
    class: never mapped to the catch-all class)."""
    if "water_codes" in development_inference:
        raise ValueError(
            "development_inference.water_codes moved to land_cover.water_codes (both pipelines read it)."
        )
    land = LandCover.from_params(land_cover)
    names = _map_classes(land, development_inference)
    lut = land.three_class_lookup()[land.nlcd_lookup()]
    lut[list(land.water_codes)] = names.index(WATER) if WATER in names else DROPPED
    return lut


# ------------------------------------------------------------------ the run's regions


def region_names(development_inference: dict[str, Any]) -> list[str]:
    """``development_inference.regions`` as a list (:func:`landuse_kedro.parameters.as_list`: a YAML
    list, one name, or names separated by spaces, as ``--params`` gives them)."""
    regions = development_inference["regions"]
    names = [str(name) for name in as_list(regions)]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"development_inference.regions must name distinct regions, got {regions!r}.")
    return names


def per_region(
    tiles: pd.DataFrame, development_inference: dict[str, Any]
) -> Iterator[tuple[str, pd.DataFrame]]:
    """(region, its tiles) in the order of ``development_inference.regions``."""
    for region in region_names(development_inference):
        yield region, tiles[tiles["region"] == region]


def this_run(
    partitions: Mapping[str, Callable[[], Any]], development_inference: dict[str, Any]
) -> dict[str, Any]:
    """The partitions of this run's regions, loaded (the folder may hold regions mapped earlier)."""
    missing = [region for region in region_names(development_inference) if region not in partitions]
    if missing:
        raise ValueError(
            f"No saved outputs for region(s) {missing}: rerun the development_inference pipeline."
        )
    return {region: partitions[region]() for region in region_names(development_inference)}
