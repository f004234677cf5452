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
from landuse_kedro.failures import check_failure_rate
from landuse_kedro.scoring import score_images

try:  # Kedro resolves node type hints at run time, so the names must exist then
    from pyspark.sql import DataFrame
except ImportError:  # an install without Spark (a cluster brings its own) still lists the pipeline
    DataFrame = Any

logger = logging.getLogger(__name__)


def score_image_files(
    images: FileIndex | DataFrame,
    scoring_model: ModelArtifact,
    land_cover: dict[str, Any],
    scoring: dict[str, Any],
    partitions_per_core: int,
) -> tuple[DataFrame, FileIndex | DataFrame]:
    """Score every listed image file in parallel on Spark, and pass on the listing it scored: the summary
    counts against that one listing, not a second one that files added or removed during the run would
    change.

    Args:
        images: ``scoring_images``: a :class:`FileIndex`, or a Spark ``binaryFile`` DataFrame with
            ``path`` and ``content``.
        scoring_model: ``scoring_model`` from training.
        land_cover: ``params:land_cover`` (the class order of the model's outputs).
        scoring: ``params:scoring`` (``batch_size``, ``threads_per_worker``, ``image_size``).
        partitions_per_core: ``params:spark_scoring.partitions_per_core``.

    Returns:
        ``scoring_predictions``: one row per file, scored or with ``error`` set (lazy: saving it runs
        the job).
        ``scored_image_list``: ``images`` as given.

    Raises:
        ValueError: The file index is empty.
    """
    return score_images(images, scoring_model, land_cover, scoring, partitions_per_core), images


def summarise_scoring(
    predictions: DataFrame,
    images: FileIndex | DataFrame,
    land_cover: dict[str, Any],
    scoring_model: ModelArtifact,
    run_provenance: dict[str, Any],
) -> dict[str, Any]:
    """Account for every listed file and measure accuracy from the written predictions table, with
    training's evaluation code, so the same model gets the same accuracy from both pipelines.

    Args:
        predictions: ``scoring_predictions`` as written.
        images: ``scored_image_list``, the listing the scorer saw.
        land_cover: ``params:land_cover`` (classes and the 3-class rule).
        scoring_model: ``scoring_model``, recorded by format, precision, size, version and digest.
        run_provenance: ``run_provenance`` (the run's id and the project's version, from the hooks).

    Returns:
        ``scoring_metrics``: ``run_id``, ``project_version``, ``counts`` (input = scored + failed,
        labelled), ``failures`` (path and reason), ``model``, and ``six_class`` / ``three_class``
        scores and confusion matrices over the scored files whose folder names a class (None when
        there is none).

    Raises:
        ValueError: The table's rows or distinct paths differ from the listing's number of files.
    """
    from pyspark.sql import functions as F

    expected = len(images) if isinstance(images, FileIndex) else len(set(images.inputFiles()))
    totals = predictions.agg(
        F.count("*").alias("rows"), F.countDistinct("path").alias("paths"), F.count("error").alias("failed")
    ).first()
    scored = totals["rows"] - totals["failed"]
    if not totals["rows"] == totals["paths"] == expected:
        raise ValueError(
            f"Scoring lost or duplicated files: {expected} input files, {totals['rows']} rows "
            f"({totals['paths']} distinct paths; {scored} scored + {totals['failed']} failed)."
        )
    failures = [
        row.asDict()
        for row in predictions.where(F.col("error").isNotNull())
        .select("path", "error")
        .orderBy("path")
        .collect()
    ]
    if failures:
        logger.warning(
            "%d of %d files could not be scored, e.g. %s: %s",
            len(failures),
            expected,
            failures[0]["path"],
            failures[0]["error"],
        )

    pairs = (
        predictions.where(F.col("error").isNull() & F.col("true_label").isNotNull())
        .groupBy("true_label", "predicted_label")
        .count()
        .collect()
    )
    metrics: dict[str, Any] = {
        "run_id": run_provenance["run_id"],
        "project_version": run_provenance["project_version"],
        "counts": {
            "input": expected,
            "scored": scored,
            "failed": totals["failed"],
            "labelled": sum(row["count"] for row in pairs),
        },
        "failures": failures,
        "model": scoring_model.summary(),
        "six_class": None,
        "three_class": None,
    }
    if pairs:
        land = LandCover.from_params(land_cover)
        counts = [row["count"] for row in pairs]
        truth = np.repeat([land.classes.index(row["true_label"]) for row in pairs], counts)
        predicted = np.repeat([land.classes.index(row["predicted_label"]) for row in pairs], counts)
        metrics.update(six_and_three_class_scores(truth, predicted, land))
        logger.info(
            "Scored %d files: accuracy %.1f%% (6 classes), %.1f%% (3 classes)",
            scored,
            100 * metrics["six_class"]["accuracy"],
            100 * metrics["three_class"]["accuracy"],
        )
    return metrics


def check_scoring_failures(scoring_metrics: dict[str, Any], scoring: dict[str, Any]) -> None:
    """Fail the run when too many files failed, after the table and metrics are saved, so they stay for
    the diagnosis.

    Args:
        scoring_metrics: ``scoring_metrics`` from :func:`summarise_scoring`.
        scoring: ``params:scoring`` (``max_failed_fraction``, default 0.05).

    Raises:
        RuntimeError: More than ``max_failed_fraction`` of the files failed; names the commonest reasons.
    """
    check_failure_rate(
        scoring_metrics["counts"]["input"],
        [f["error"] for f in scoring_metrics["failures"]],
        float(scoring.get("max_failed_fraction", 0.05)),
        "files",
    )


def plot_scoring_confusion_matrices(metrics: dict[str, Any]) -> Figure:
    """Show training's confusion-matrix figure for the scored files; when no file was labelled (images
    outside class folders), a figure that says so rather than no file at all.

    Args:
        metrics: ``scoring_metrics`` from :func:`summarise_scoring`.

    Returns:
        ``scoring_confusion_matrix_plot``: the figure.
    """
    if metrics["six_class"] is not None:
        return confusion_figure(metrics)
    figure = Figure(figsize=(6, 2))
    figure.text(
        0.5,
        0.5,
        f"No labelled images among {metrics['counts']['input']} scored files:\nno confusion matrix.",
        ha="center",
        va="center",
    )
    return figure
