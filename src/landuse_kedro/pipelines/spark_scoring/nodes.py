"""Accounting and accuracy of a scoring run, computed from the written predictions table.

Scores reuse the training pipeline's evaluation code, so the same model gets the same accuracy
from both pipelines.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.evaluation import confusion_figure, six_and_three_class_scores
from landuse_kedro.scoring import check_failure_rate, score_images

try:  # Kedro resolves node type hints at run time, so the names must exist then
    from pyspark.sql import DataFrame
except ImportError:  # an install without Spark (a cluster brings its own) still lists the pipeline
    DataFrame = Any

logger = logging.getLogger(__name__)


def score_image_files(images: FileIndex | DataFrame, scoring_model: ModelArtifact, land_cover: dict[str, Any],
                      scoring: dict[str, Any], partitions_per_core: int) -> tuple[DataFrame, FileIndex | DataFrame]:
    """The shared scorer's rows, and the listing it scored: the summary counts against that one
    listing, not a second one that files added or removed during the run would change."""
    return score_images(images, scoring_model, land_cover, scoring, partitions_per_core), images


def summarise_scoring(
    predictions: DataFrame, images: FileIndex | DataFrame, land_cover: dict[str, Any],
    scoring_model: ModelArtifact | None = None,
) -> dict[str, Any]:
    """Counts (input = scored + failed, checked against the scorer's listing), every failure with
    its path and reason, 6-/3-class accuracy and confusion matrices over the scored files whose
    folder names a class, and the model's format and precision (fp32 or int8)."""
    from pyspark.sql import functions as F

    expected = len(images) if isinstance(images, FileIndex) else len(set(images.inputFiles()))
    totals = predictions.agg(F.count("*").alias("rows"), F.countDistinct("path").alias("paths"),
                             F.count("error").alias("failed")).first()
    scored = totals["rows"] - totals["failed"]
    if not totals["rows"] == totals["paths"] == expected:
        raise ValueError(
            f"Scoring lost or duplicated files: {expected} input files, {totals['rows']} rows "
            f"({totals['paths']} distinct paths; {scored} scored + {totals['failed']} failed)."
        )
    failures = [row.asDict() for row in
                predictions.where(F.col("error").isNotNull()).select("path", "error").orderBy("path").collect()]
    if failures:
        logger.warning("%d of %d files could not be scored, e.g. %s: %s",
                       len(failures), expected, failures[0]["path"], failures[0]["error"])

    pairs = (predictions.where(F.col("error").isNull() & F.col("true_label").isNotNull())
             .groupBy("true_label", "predicted_label").count().collect())
    metrics: dict[str, Any] = {
        "counts": {"input": expected, "scored": scored, "failed": totals["failed"],
                   "labelled": sum(row["count"] for row in pairs)},
        "failures": failures,
        "model": None if scoring_model is None else {
            "format": scoring_model.format, "precision": scoring_model.precision,
            "bytes": len(scoring_model.payload),
        },
        "six_class": None,
        "three_class": None,
    }
    if pairs:
        land = LandCover.from_params(land_cover)
        counts = [row["count"] for row in pairs]
        truth = np.repeat([land.classes.index(row["true_label"]) for row in pairs], counts)
        predicted = np.repeat([land.classes.index(row["predicted_label"]) for row in pairs], counts)
        metrics.update(six_and_three_class_scores(truth, predicted, land))
        logger.info("Scored %d files: accuracy %.1f%% (6 classes), %.1f%% (3 classes)", scored,
                    100 * metrics["six_class"]["accuracy"], 100 * metrics["three_class"]["accuracy"])
    return metrics


def check_scoring_failures(scoring_metrics: dict[str, Any], scoring: dict[str, Any]) -> None:
    """Fail the run when too many files failed (after the table and metrics are saved)."""
    check_failure_rate(scoring_metrics["counts"]["input"], [f["error"] for f in scoring_metrics["failures"]],
                       float(scoring.get("max_failed_fraction", 0.05)), "files")


def plot_scoring_confusion_matrices(metrics: dict[str, Any]) -> Figure:
    """The training pipeline's figure for the same metrics; a figure that says so when no file was
    labelled (images outside class folders), rather than no file at all."""
    if metrics["six_class"] is not None:
        return confusion_figure(metrics)
    figure = Figure(figsize=(6, 2))
    figure.text(0.5, 0.5, f"No labelled images among {metrics['counts']['input']} scored files:\n"
                "no confusion matrix.", ha="center", va="center")
    return figure
