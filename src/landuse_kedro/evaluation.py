"""Honest evaluation shared by training and spark_scoring: 6-class and 3-class scores and their figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from landuse_kedro.scoring import three_class_label


def three_class_names(land_cover: Mapping[str, Any]) -> list[str]:
    """The walkthrough's grouping in a stable order: named groups first, then the catch-all."""
    groups = list(dict.fromkeys(land_cover["three_class"].values()))
    return [*groups, land_cover["three_class_other"]]


def to_three_class(labels: np.ndarray, land_cover: Mapping[str, Any]) -> np.ndarray:
    """Map 6-class indices to 3-class indices (Developed, Cultivated, everything else)."""
    names = three_class_names(land_cover)
    lookup = np.array([names.index(three_class_label(c, land_cover)) for c in land_cover["classes"]])
    return lookup[np.asarray(labels, dtype=int)]


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


def confusion_figure(metrics: Mapping[str, Any]):
    """Side-by-side 6-class and 3-class confusion matrices, row-normalised colours, counts printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [("6 classes", metrics["six_class"]), ("3 classes", metrics["three_class"])]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [6, 3.5]})
    for axis, (title, scores) in zip(axes, views):
        labels = scores["confusion_matrix"]["labels"]
        counts = np.array(scores["confusion_matrix"]["matrix"])
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(counts):
            axis.text(col, row, str(count), ha="center", va="center",
                      color="white" if rates[row, col] > 0.5 else "black", fontsize=9)
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{title}: accuracy {scores['accuracy']:.1%}")
    figure.tight_layout()
    return figure


def learning_curve_figure(history: Mapping[str, Any]):
    """Loss and accuracy per epoch for both phases, with the fine-tuning start marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history["epochs"]
    x = np.arange(1, len(epochs) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(x, [e[metric] for e in epochs], "o-", label="train")
        axis.plot(x, [e[f"val_{metric}"] for e in epochs], "o-", label="validation")
        phases = [e["phase"] for e in epochs]
        if "fine_tune" in phases:
            axis.axvline(phases.index("fine_tune") + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure
