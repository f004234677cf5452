"""Honest evaluation shared by training and spark_scoring: 6-class and 3-class scores and their figures.

Figures are ``matplotlib.figure.Figure`` objects with no pyplot state (no global figure list, no
backend switch): the catalog's ``MatplotlibDataset`` saves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from landuse_kedro.classes import LandCover


def classification_scores(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    indices = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=indices, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": {
            "labels": list(names),
            "matrix": confusion_matrix(truth, predicted, labels=indices).tolist(),
        },
    }


def six_and_three_class_scores(
    truth: np.ndarray, predicted: np.ndarray, land_cover: LandCover
) -> dict[str, Any]:
    """:func:`classification_scores` of class indices in the model's classes (``six_class``) and
    regrouped into the 3-class view (``three_class``).

    Args:
        truth: true class indices (``land_cover.classes`` order).
        predicted: predicted class indices, same order.
        land_cover: the vocabulary (``LandCover.from_params(params:land_cover)``).

    Returns:
        ``{"six_class": scores, "three_class": scores}``.
    """
    return {
        "six_class": classification_scores(truth, predicted, list(land_cover.classes)),
        "three_class": classification_scores(
            land_cover.three_class_indices(truth),
            land_cover.three_class_indices(predicted),
            list(land_cover.three_class_names),
        ),
    }


def confusion_figure(metrics: Mapping[str, Any]) -> Figure:
    """Side-by-side 6-class and 3-class confusion matrices, row-normalised colours, counts printed."""
    views = [("6 classes", metrics["six_class"]), ("3 classes", metrics["three_class"])]
    figure = Figure(figsize=(13, 5.5))
    axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [6, 3.5]})
    for axis, (title, scores) in zip(axes, views):
        labels = scores["confusion_matrix"]["labels"]
        counts = np.array(scores["confusion_matrix"]["matrix"])
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(counts):
            axis.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                color="white" if rates[row, col] > 0.5 else "black",
                fontsize=9,
            )
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{title}: accuracy {scores['accuracy']:.1%}")
    figure.tight_layout()
    return figure


def learning_curve_figure(history: Mapping[str, Any]) -> Figure:
    """Loss and accuracy per epoch for both phases, with the fine-tuning start marked."""
    epochs = history["epochs"]
    x = np.arange(1, len(epochs) + 1)
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(x, [e[metric] for e in epochs], "o-", label="train")
        axis.plot(x, [e[f"val_{metric}"] for e in epochs], "o-", label="validation")
        phases = [e["phase"] for e in epochs]
        if "fine_tune" in phases:
            axis.axvline(
                phases.index("fine_tune") + 0.5, color="grey", linestyle="--", label="fine-tuning starts"
            )
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure
