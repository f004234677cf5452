"""The classifier the training settings describe, and what they say about how its head trains: one
definition that feature extraction and head training both build from, so their features agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landuse_kedro.classes import LandCover


def trains_from_scratch(training: Mapping[str, Any]) -> bool:
    """``weights: none``: no pretrained backbone, so nothing is frozen and there is nothing to fine-tune."""
    return str(training["weights"]).lower() in ("none", "null")


def head_trains_on_features(training: Mapping[str, Any]) -> bool:
    """The head trains on cached features unless told not to, or when nothing is frozen (from scratch)."""
    return bool(training.get("cache_features", True)) and not trains_from_scratch(training)


def seeded_classifier(land_cover: Mapping[str, Any], training: Mapping[str, Any], scoring: Mapping[str, Any]):
    """The seeded classifier of the settings: the same layers and starting weights in every node."""
    import keras

    from landuse_kedro.models import build_classifier

    keras.utils.set_random_seed(training["seed"])
    return build_classifier(
        backbone=training["backbone"],
        weights=training["weights"],
        num_classes=len(LandCover.from_params(land_cover).classes),
        image_size=scoring["image_size"],
        dropout=training["dropout"],
        mid_level_features=training.get("mid_level_features", True),
    )
