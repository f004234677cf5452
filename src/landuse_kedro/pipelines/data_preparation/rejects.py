"""data_preparation's reject rules: why a tile cannot be a training tile, first failed check first."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from landuse_kedro.tiling import ScenePlan

REJECT_REASONS = UNREADABLE, IMAGE_NODATA, OUTSIDE_LABELS, UNKNOWN_CODES, DROPPED_DOMINANT, IMPURE = (
    "unreadable",
    "image_nodata",
    "outside_labels",
    "unknown_codes",
    "dropped_dominant",
    "impure",
)


def finish_candidates(
    frame: pd.DataFrame, plans: Mapping[str, ScenePlan], min_label_share: float
) -> pd.DataFrame:
    """Task rows -> the candidate table: ids, class names, CRS and the reason a tile is unusable."""
    frame = frame.sort_values(["scene", "row", "col"], ignore_index=True)
    classes = next(iter(plans.values())).classes
    frame["class_name"] = np.where(
        frame["class_pixels"] > 0, np.asarray(classes, dtype=object)[frame["class_index"]], None
    )
    frame["reject_reason"] = _reject_reasons(frame, min_label_share)
    frame.insert(0, "tile_id", [plans[s].tile_id(r, c) for s, r, c in zip(frame.scene, frame.row, frame.col)])
    frame["crs"] = frame["scene"].map({key: plan.grid.crs.to_string() for key, plan in plans.items()})
    return frame.drop(columns=["class_index", "class_pixels"])


def _reject_reasons(frame: pd.DataFrame, min_label_share: float) -> np.ndarray:
    """First failed check per tile, in order of severity; None for a usable tile."""
    conditions = [
        frame.read_error.notna(),
        frame.nodata_pixels > 0,
        frame.unlabelled_pixels > 0,
        frame.unknown_pixels > 0,
        frame.dropped_pixels >= frame.label_share * frame.width * frame.height,
        frame.label_share < min_label_share,
    ]
    reasons = np.select(conditions, list(REJECT_REASONS), "")
    return np.where(reasons == "", None, reasons)
