"""The evaluation node and what follows from it: the saved Keras model and both scoring exports scored
on the validation split, the export ``scoring_model`` gets (int8 only if it keeps fp32's accuracy,
none that is not clearly better than guessing), the warnings about thin classes, and the figures."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landuse_kedro import evaluation
from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.models.quantize import calibration_sample
from landuse_kedro.tile_features import tile_batches

logger = logging.getLogger(__name__)

EVALUATION_BATCH = 16
"""Validation tiles per batch when three models score them in turn: activation memory grows with the batch
(Keras and two ONNX Runtime sessions at 64 tiles took the driver to 2.9 GB on the sample scene)."""


def choose_precision(requested: str, backend: str, accuracy: Mapping[str, float], max_drop: float) -> str:
    """``requested``, unless int8 cannot serve: the keras backend runs no ONNX, or the int8 model
    lost more than ``max_drop`` of fp32's 6-class validation accuracy (then fp32, with a warning)."""
    if requested != "int8":
        return requested
    if backend != "onnx":
        logger.warning(
            "scoring.precision int8 is an ONNX model but scoring.backend is %s: scoring uses fp32.", backend
        )
        return "fp32"
    if round(accuracy["fp32"] - accuracy["int8"], 9) > max_drop:  # rounded: 0.91 - 0.90 is 0.01 here
        logger.warning(
            "The int8 model scored %.1f%% against fp32's %.1f%% (6 classes), more than %.1f points "
            "lower (training.int8.max_accuracy_drop): scoring uses fp32.",
            100 * accuracy["int8"],
            100 * accuracy["fp32"],
            100 * max_drop,
        )
        return "fp32"
    return "int8"


def chance_test(accuracy: float, labels: np.ndarray, num_classes: int, max_p_value: float) -> dict[str, Any]:
    """Is ``accuracy`` on the validation ``labels`` clearly better than guessing? One-sided binomial
    test against chance: the largest class's share of the tiles (1 / classes on a balanced set), the
    best a model that ignores its input can expect. Warns when ``p >= max_p_value``."""
    from scipy.stats import binomtest

    tiles = len(labels)
    correct = round(accuracy * tiles)
    chance = max(float(np.bincount(labels, minlength=num_classes).max()) / tiles, 1 / num_classes)
    p_value = float(binomtest(correct, tiles, chance, alternative="greater").pvalue)
    above = p_value < max_p_value
    if not above:
        logger.warning(
            "The model is not clearly better than guessing: %d of %d validation tiles right (%.1f%%) against "
            "chance %.1f%% (one-sided binomial test, p = %.3g >= training.chance_p_value %g).",
            correct,
            tiles,
            100 * accuracy,
            100 * chance,
            p_value,
            max_p_value,
        )
    return {
        "test": "one-sided binomial, accuracy > chance",
        "correct": correct,
        "tiles": tiles,
        "accuracy": accuracy,
        "chance": chance,
        "p_value": p_value,
        "max_p_value": max_p_value,
        "above_chance": above,
    }


def tiles_per_class(labels: np.ndarray, classes: list[str], minimum: int) -> dict[str, Any]:
    """Training tiles per class, and a warning naming the classes below ``minimum``
    (``training.min_train_tiles_per_class``)."""
    counts = dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist(), strict=True))
    below = {name: count for name, count in counts.items() if count < minimum}
    if below:
        logger.warning(
            "Class(es) with fewer than %d training tiles (training.min_train_tiles_per_class): %s. Expect a "
            "weak model: add regions or years of scenes, or lower data_preparation.min_label_share.",
            minimum,
            ", ".join(f"{name} {count}" for name, count in below.items()),
        )
    return {"counts": counts, "minimum": minimum, "below_minimum": below}


def _validation_classes(
    landuse_classifier: Any,
    exports: Mapping[str, ModelArtifact],
    training_tile_files: FileIndex,
    urls: list[str],
    image_size: int,
) -> dict[str, np.ndarray]:
    """Each model's class of every validation tile (``keras`` and each export), the tiles read once,
    batch by batch, each batch scored by all three models: no model sees the whole split in memory."""
    from landuse_kedro.models.predictor import load_predictor

    threads = os.cpu_count() or 1
    models: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "keras": lambda images: np.asarray(landuse_classifier.predict_on_batch(images)),
        **{
            precision: load_predictor(artifact.format, artifact.payload, threads=threads)
            for precision, artifact in exports.items()
        },
    }
    classes_of: dict[str, list[np.ndarray]] = {name: [] for name in models}
    for images in tile_batches(training_tile_files, urls, image_size, EVALUATION_BATCH):
        for name, predict in models.items():
            classes_of[name].append(predict(images).argmax(axis=1))
    return {name: np.concatenate(parts) for name, parts in classes_of.items()}


def _export_scores(
    labels: np.ndarray,
    predicted_by: Mapping[str, np.ndarray],
    exports: Mapping[str, ModelArtifact],
    land: LandCover,
) -> dict[str, dict[str, Any]]:
    """Each export's size, 6- and 3-class scores and how often it picks the Keras model's class
    (fp32 every time, int8 nearly: less means the export, not the model, is wrong)."""
    scores_of: dict[str, dict[str, Any]] = {}
    for precision, artifact in exports.items():
        exported_predicted = predicted_by[precision]
        scores = evaluation.six_and_three_class_scores(labels, exported_predicted, land)
        scores_of[precision] = {
            "format": artifact.format,
            "bytes": len(artifact.payload),
            "same_class_as_keras": float(np.mean(exported_predicted == predicted_by["keras"])),
            "accuracy_6": scores["six_class"]["accuracy"],
            "accuracy_3": scores["three_class"]["accuracy"],
            **scores,
        }
    return scores_of


def _add_promotion_checks(
    metrics: dict[str, Any],
    chosen_scores: Mapping[str, Any],
    labels: np.ndarray,
    train_labels: np.ndarray,
    land: LandCover,
    training: Mapping[str, Any],
) -> None:
    """Add the chosen export's :func:`chance_test` and the :func:`tiles_per_class` warning to
    ``metrics``, and whether the export is promoted to ``scoring_model`` (above chance, or
    ``training.promote_chance_model``)."""
    metrics["chance_test"] = chance_test(
        chosen_scores["accuracy_6"], labels, len(land.classes), float(training["chance_p_value"])
    )
    metrics["train_tiles_per_class"] = tiles_per_class(
        train_labels, list(land.classes), int(training["min_train_tiles_per_class"])
    )
    metrics["scoring_model"]["promoted"] = bool(
        metrics["chance_test"]["above_chance"] or training["promote_chance_model"]
    )


def evaluate_classifier(
    landuse_classifier: Any,
    training_tile_set: pd.DataFrame,
    training_tile_files: FileIndex,
    scoring_model_fp32: ModelArtifact,
    scoring_model_int8: ModelArtifact,
    training_history: Mapping[str, Any],
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> dict[str, Any]:
    """Score the saved Keras model and each scoring export on the validation split (6- and 3-class; fp32
    should pick Keras's class every time, int8 nearly), and decide which precision ``scoring_model``
    gets (``scoring.precision``, checked by :func:`choose_precision`). The validation tiles are read
    batch by batch, each batch scored by all three models.

    Args:
        landuse_classifier: ``landuse_classifier`` from :func:`train_classifier`.
        training_tile_set: ``training_tile_set`` from :func:`assemble_tile_set`.
        training_tile_files: ``training_tile_files`` (to read the validation tiles).
        scoring_model_fp32: ``scoring_model_fp32`` from :func:`export_scoring_model`.
        scoring_model_int8: ``scoring_model_int8`` from :func:`quantize_scoring_model`.
        training_history: ``training_history`` (kept phase, training time).
        land_cover: ``params:land_cover`` (classes and the 3-class rule).
        training: ``params:training`` (``splits``, ``int8``, ``chance_p_value``,
            ``promote_chance_model``, ``min_train_tiles_per_class``, the model settings recorded).
        scoring: ``params:scoring`` (``backend``, ``precision``, ``image_size``).

    Returns:
        ``training_metrics``: the Keras model's scores and confusion matrices, each export's accuracy and
        agreement with Keras, ``scoring_model`` (the chosen export's backend, precision and scores, and
        whether it is ``promoted``), ``chance_test`` (:func:`chance_test` of the chosen export) and
        ``train_tiles_per_class`` (:func:`tiles_per_class`).
    """
    validation = training_tile_set[training_tile_set["role"] == "validation"]
    train = training_tile_set[training_tile_set["role"] == "train"]
    labels = validation["label"].to_numpy(np.int32)
    artifacts = {"fp32": scoring_model_fp32, "int8": scoring_model_int8}
    predicted_by = _validation_classes(
        landuse_classifier, artifacts, training_tile_files, validation["url"].tolist(), scoring["image_size"]
    )
    predicted = predicted_by["keras"]
    land = LandCover.from_params(land_cover)
    exports = _export_scores(labels, predicted_by, artifacts, land)
    chosen = choose_precision(
        scoring.get("precision", "fp32"),
        scoring["backend"],
        {p: e["accuracy_6"] for p, e in exports.items()},
        float(training["int8"]["max_accuracy_drop"]),
    )
    calibrated = calibration_sample(len(train), int(training["int8"]["calibration_tiles"]), training["seed"])
    metrics = {
        "split": training["splits"]["validation"],
        "validation_tiles": len(validation),
        "train_tiles": len(train),
        "early_stopping_on_validation": True,
        **evaluation.six_and_three_class_scores(labels, predicted, land),
        "model": {key: training[key] for key in ("backbone", "weights", "dropout")},
        "kept_phase": training_history["kept_phase"],
        "training_seconds": training_history["seconds"],
        "scoring_model": {  # what scoring runs: saved as `scoring_model`
            "backend": scoring["backend"],
            "precision": chosen,
            "requested_precision": scoring.get("precision", "fp32"),
            **exports[chosen],
        },
        "precisions": {  # both exports, without their full score tables
            p: {k: v for k, v in e.items() if k not in ("six_class", "three_class")}
            for p, e in exports.items()
        },
        "int8_calibration_tiles": len(calibrated),
        "classes": list(land.classes),
    }
    metrics["accuracy_6"] = metrics["six_class"]["accuracy"]
    metrics["accuracy_3"] = metrics["three_class"]["accuracy"]
    _add_promotion_checks(metrics, exports[chosen], labels, train["label"].to_numpy(np.int32), land, training)
    logger.info(
        "Validation accuracy: %.1f%% (6 classes), %.1f%% (3 classes) on %d tiles; scoring exports "
        "fp32 %.1f%%, int8 %.1f%% (6 classes): scoring_model is %s",
        100 * metrics["accuracy_6"],
        100 * metrics["accuracy_3"],
        len(validation),
        100 * exports["fp32"]["accuracy_6"],
        100 * exports["int8"]["accuracy_6"],
        chosen,
    )
    return metrics


def select_scoring_model(
    scoring_model_fp32: ModelArtifact,
    scoring_model_int8: ModelArtifact,
    training_metrics: Mapping[str, Any],
    previous_scoring_model: ModelArtifact | None,
) -> ModelArtifact:
    """Save the export that scoring runs, as the evaluation chose it, so spark_scoring and
    development_inference read ``scoring_model`` whatever its precision. A model the evaluation did
    not promote (not clearly above chance) never replaces a previous one: scoring keeps the previous
    ``scoring_model`` (saved again as this run's version, so the run's later pipelines read it), and
    with none the run stops.

    Args:
        scoring_model_fp32: ``scoring_model_fp32``.
        scoring_model_int8: ``scoring_model_int8``.
        training_metrics: ``training_metrics`` (``scoring_model.precision``, ``scoring_model.promoted``,
            ``chance_test``).
        previous_scoring_model: ``previous_scoring_model``: the newest saved ``scoring_model``, None
            before the first.

    Returns:
        ``scoring_model``: one of the two exports, or the previous scoring model.

    Raises:
        ValueError: The model was not promoted and there is no previous scoring model.
    """
    if training_metrics["scoring_model"]["promoted"]:
        precision = training_metrics["scoring_model"]["precision"]
        return {"fp32": scoring_model_fp32, "int8": scoring_model_int8}[precision]
    test = training_metrics["chance_test"]
    why = (
        f"This run's model is not clearly better than guessing ({100 * test['accuracy']:.1f}% of "
        f"{test['tiles']} validation tiles against chance {100 * test['chance']:.1f}%, p = "
        f"{test['p_value']:.3g}), so it does not become scoring_model."
    )
    todo = (
        "Give training more tiles per class: more regions, more years of scenes, or a lower "
        "data_preparation.min_label_share (training_metrics.json: train_tiles_per_class); or set "
        "training.promote_chance_model: true to score with it anyway."
    )
    if previous_scoring_model is None:
        raise ValueError(f"{why} There is no earlier scoring_model to score with. {todo}")
    logger.warning(
        "%s Scoring keeps the previous scoring_model (%s), saved again as this run's version. %s",
        why,
        ", ".join(f"{key} {value}" for key, value in previous_scoring_model.summary().items()),
        todo,
    )
    return previous_scoring_model


def plot_confusion_matrices(training_metrics: Mapping[str, Any]) -> Figure:
    """Show the 6- and 3-class confusion matrices of the kept model on the validation split.

    Args:
        training_metrics: ``training_metrics`` from :func:`evaluate_classifier`.

    Returns:
        ``training_confusion_matrix_plot``: the figure.
    """
    return evaluation.confusion_figure(training_metrics)


def plot_learning_curves(training_history: Mapping[str, Any]) -> Figure:
    """Show loss and accuracy per epoch of both phases, fine-tuning's start marked.

    Args:
        training_history: ``training_history`` from :func:`train_classifier`.

    Returns:
        ``learning_curve_plot``: the figure.
    """
    return evaluation.learning_curve_figure(training_history)
