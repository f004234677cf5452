"""Transfer learning on the prepared tiles: head first (backbone frozen, trained on cached backbone
features), then optionally the top blocks at a lower learning rate (on images), then the scoring
exports (fp32 ONNX and its calibrated int8 twin) and an evaluation of each on the validation split.

Nodes take and return objects only; the catalog decides where the model, its ONNX export and the
reports live.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, get_args

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landuse_kedro import evaluation
from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.model_file import ModelArtifact, Precision
from landuse_kedro.models.quantize import calibration_sample
from landuse_kedro.pipelines.training import features
from landuse_kedro.pipelines.training.inputs import (
    TileArrays,
    check_splits,
    decode_split,
    make_dataset,
)

logger = logging.getLogger(__name__)

PRECISIONS = get_args(Precision)


def assemble_tile_set(
    model_input_tiles: Mapping[str, Callable[[], Any]],
    tile_manifest: pd.DataFrame,
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> dict[str, TileArrays]:
    """Decode the training and validation tiles once, and refuse sets that cannot train or be scored (and
    a ``scoring.precision`` that could never be exported) before any training time is spent.

    Args:
        model_input_tiles: ``model_input_tiles``, ``<split>/<Class>/<tile_id>`` -> PNG loader.
        tile_manifest: ``tile_manifest``; it, not the folder listing, decides which tiles belong.
        land_cover: ``params:land_cover`` (the class order of the labels).
        training: ``params:training`` (``splits``: the manifest's split names).
        scoring: ``params:scoring`` (``image_size``, ``precision``).

    Returns:
        ``training_tile_set``: ``"train"`` and ``"validation"`` -> :class:`TileArrays`.

    Raises:
        ValueError: ``scoring.precision`` is not fp32 or int8; a manifest class is not in
            ``land_cover``, a tile is missing or the wrong size; a split is empty, training has a single
            class, or a class has tiles in only one split.
    """
    if scoring.get("precision", "fp32") not in PRECISIONS:
        raise ValueError(
            f"scoring.precision is '{scoring['precision']}': expected one of {list(PRECISIONS)}."
        )
    classes = list(LandCover.from_params(land_cover).classes)
    splits = training["splits"]
    tile_set = {
        role: decode_split(model_input_tiles, tile_manifest, splits[role], classes, scoring["image_size"])
        for role in ("train", "validation")
    }
    check_splits(tile_set["train"], tile_set["validation"], classes)
    for role, tiles in tile_set.items():
        counts = np.bincount(tiles.labels, minlength=len(classes))
        logger.info(
            "%s tiles: %d (%s)", role, len(tiles), ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
        )
    return tile_set


def _fit_phase(
    model,
    phase: str,
    learning_rate: float,
    epochs: int,
    train,
    validation,
    training: Mapping[str, Any],
    records: list[dict[str, Any]],
) -> float:
    """Compile and fit one phase; early stopping restores the phase's best weights. Returns the
    best validation loss."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=training["patience"], restore_best_weights=True
    )
    clock: dict[str, float] = {}
    log = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(start=time.perf_counter()),
        on_epoch_end=lambda epoch, logs: records.append(
            {
                "phase": phase,
                "epoch": epoch + 1,
                "learning_rate": learning_rate,
                **{key: float(value) for key, value in logs.items()},
                "seconds": round(time.perf_counter() - clock["start"], 2),
            }
        ),
    )
    logger.info("Phase %s: up to %d epochs at learning rate %g", phase, epochs, learning_rate)
    model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        shuffle=False,  # tf.data shuffles
        verbose=2,
        callbacks=[stop, log],
    )
    return min(r["val_loss"] for r in records if r["phase"] == phase)


def train_classifier(
    tile_set: dict[str, TileArrays],
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Train the head on the frozen backbone, then fine-tune the top blocks if asked.

    With pretrained weights and ``training.cache_features`` (default), the head trains on the
    backbone's features computed once per tile and dihedral view (``features.py``) instead of
    re-running the backbone every epoch; ``cache_features: false`` trains it on images, colour jitter
    included. Fine-tuning always runs on images, and its weights are kept only if they beat the
    head-only model's best validation loss, so it never makes the saved model worse on it. The
    validation split serves early stopping, as in the walkthrough.

    Args:
        tile_set: ``training_tile_set`` from :func:`assemble_tile_set`.
        land_cover: ``params:land_cover`` (the classes: the model's outputs).
        training: ``params:training`` (backbone, weights, phases, augmentation, seed).
        scoring: ``params:scoring`` (``image_size``; ``batch_size`` for the feature cache).

    Returns:
        ``landuse_classifier``: the Keras model with the kept phase's weights.
        ``training_history``: per-epoch records of each phase, the kept phase, best validation loss,
        timings and the head's input (images or cached features).
    """
    import keras

    from landuse_kedro.models import build_classifier, features_and_head, unfreeze_top

    keras.utils.set_random_seed(training["seed"])
    classes = list(LandCover.from_params(land_cover).classes)
    model = build_classifier(
        backbone=training["backbone"],
        weights=training["weights"],
        num_classes=len(classes),
        image_size=scoring["image_size"],
        dropout=training["dropout"],
        mid_level_features=training.get("mid_level_features", True),
    )
    batch, seed = training["batch_size"], training["seed"]

    def images() -> tuple[Any, Any]:
        return (
            make_dataset(tile_set["train"], batch, seed, training["augmentation"]),
            make_dataset(tile_set["validation"], batch, seed),
        )

    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    from_scratch = str(training["weights"]).lower() in ("none", "null")
    cache = None
    if training.get("cache_features", True) and not from_scratch:  # from scratch, nothing is frozen
        feature_model, head = features_and_head(model)
        cache = features.cache_features(
            feature_model,
            tile_set["train"],
            tile_set["validation"],
            training["augmentation"],
            scoring["batch_size"],
            os.cpu_count() or 1,
        )
        feature_seconds = round(time.perf_counter() - started, 1)
        logger.info(
            "Backbone features of %d training tiles x %d views and %d validation tiles in %.1f s",
            len(tile_set["train"]),
            len(cache.views),
            len(tile_set["validation"]),
            feature_seconds,
        )
        if jitter := [k for k in ("brightness", "contrast", "saturation") if training["augmentation"].get(k)]:
            logger.info(
                "Colour jitter (%s) is not cached: it applies to image training (fine-tuning) only.",
                ", ".join(jitter),
            )
        best = _fit_phase(
            head,
            "head",
            training["learning_rate"],
            training["epochs"],
            features.train_dataset(cache, batch, seed),
            features.validation_dataset(cache, batch),
            training,
            records,
        )
    else:
        best = _fit_phase(
            model, "head", training["learning_rate"], training["epochs"], *images(), training, records
        )
    head_seconds = round(time.perf_counter() - started, 1)
    kept = "head"
    if from_scratch:
        logger.info("weights: none trains the whole network from scratch: no fine-tuning phase.")
    elif training["fine_tune_epochs"] > 0 and training["fine_tune_blocks"] > 0:
        head_weights = {v.path: v.numpy() for v in model.weights}
        unfrozen = unfreeze_top(model, training["fine_tune_blocks"])
        logger.info(
            "Fine-tuning %d backbone layers (top %d blocks)", len(unfrozen), training["fine_tune_blocks"]
        )
        tuned = _fit_phase(
            model,
            "fine_tune",
            training["fine_tune_learning_rate"],
            training["fine_tune_epochs"],
            *images(),
            training,
            records,
        )
        if tuned < best:
            best, kept = tuned, "fine_tune"
        else:
            logger.info("Fine-tuning did not beat val_loss %.4f: keeping the head-only weights.", best)
            for variable in model.weights:
                variable.assign(head_weights[variable.path])
    history = {
        "epochs": records,
        "kept_phase": kept,
        "best_val_loss": best,
        "seconds": round(time.perf_counter() - started, 1),
        "head_seconds": head_seconds,
        "head_input": "images" if cache is None else "cached_features",
        "feature_cache": None
        if cache is None
        else {
            "views": len(cache.views),
            "features": int(cache.train.shape[-1]),
            "seconds": feature_seconds,
            "megabytes": round((cache.train.nbytes + cache.validation.nbytes) / 2**20, 1),
        },
        "train_tiles": len(tile_set["train"]),
        "validation_tiles": len(tile_set["validation"]),
        "classes": classes,
    }
    return model, history


def export_scoring_model(landuse_classifier: Any, scoring: Mapping[str, Any]) -> ModelArtifact:
    """Export the model in the format the scoring backend runs: ONNX (about 1.5-3x faster on CPU) or
    .keras.

    Args:
        landuse_classifier: ``landuse_classifier`` from :func:`train_classifier`.
        scoring: ``params:scoring`` (``backend``).

    Returns:
        ``scoring_model_fp32``: the fp32 export.

    Raises:
        ValueError: ``scoring.backend`` is not ``onnx`` or ``keras``.
    """
    from landuse_kedro.models.onnx_export import keras_to_artifact, keras_to_onnx

    exporters = {"onnx": keras_to_onnx, "keras": keras_to_artifact}
    if scoring["backend"] not in exporters:
        raise ValueError(f"scoring.backend is '{scoring['backend']}': expected one of {sorted(exporters)}.")
    return exporters[scoring["backend"]](landuse_classifier)


def quantize_scoring_model(
    scoring_model_fp32: ModelArtifact, tile_set: dict[str, TileArrays], training: Mapping[str, Any]
) -> ModelArtifact:
    """Make the calibrated int8 twin of the fp32 export. Calibration sees a seeded sample of training tiles
    only, so the int8 model's validation accuracy is measured on tiles it never saw.

    Args:
        scoring_model_fp32: ``scoring_model_fp32`` from :func:`export_scoring_model`.
        tile_set: ``training_tile_set`` (its training split).
        training: ``params:training`` (``int8.calibration_tiles``, ``seed``).

    Returns:
        ``scoring_model_int8``: the int8 ONNX model.
    """
    from landuse_kedro.models.onnx_export import artifact_to_onnx
    from landuse_kedro.models.quantize import quantize_onnx

    train = tile_set["train"]
    chosen = calibration_sample(len(train), int(training["int8"]["calibration_tiles"]), training["seed"])
    started = time.perf_counter()
    int8 = quantize_onnx(artifact_to_onnx(scoring_model_fp32), train.images[chosen])
    logger.info(
        "int8 model calibrated on %d training tiles in %.1f s (%.1f MB, fp32 %.1f MB)",
        len(chosen),
        time.perf_counter() - started,
        len(int8.payload) / 2**20,
        len(scoring_model_fp32.payload) / 2**20,
    )
    return int8


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
            "weak model: add regions or years of scenes, or lower data_preparation.min_purity.",
            minimum,
            ", ".join(f"{name} {count}" for name, count in below.items()),
        )
    return {"counts": counts, "minimum": minimum, "below_minimum": below}


def evaluate_classifier(
    landuse_classifier: Any,
    tile_set: dict[str, TileArrays],
    scoring_model_fp32: ModelArtifact,
    scoring_model_int8: ModelArtifact,
    training_history: Mapping[str, Any],
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> dict[str, Any]:
    """Score the saved Keras model and each scoring export on the validation split (6- and 3-class; fp32
    should pick Keras's class every time, int8 nearly), and decide which precision ``scoring_model``
    gets (``scoring.precision``, checked by :func:`choose_precision`).

    Args:
        landuse_classifier: ``landuse_classifier`` from :func:`train_classifier`.
        tile_set: ``training_tile_set`` from :func:`assemble_tile_set`.
        scoring_model_fp32: ``scoring_model_fp32`` from :func:`export_scoring_model`.
        scoring_model_int8: ``scoring_model_int8`` from :func:`quantize_scoring_model`.
        training_history: ``training_history`` (kept phase, training time).
        land_cover: ``params:land_cover`` (classes and the 3-class rule).
        training: ``params:training`` (``batch_size``, ``splits``, ``int8``, ``chance_p_value``,
            ``promote_chance_model``, ``min_train_tiles_per_class``, the model settings recorded).
        scoring: ``params:scoring`` (``backend``, ``precision``, ``batch_size``).

    Returns:
        ``training_metrics``: the Keras model's scores and confusion matrices, each export's accuracy and
        agreement with Keras, ``scoring_model`` (the chosen export's backend, precision and scores, and
        whether it is ``promoted``), ``chance_test`` (:func:`chance_test` of the chosen export) and
        ``train_tiles_per_class`` (:func:`tiles_per_class`).
    """
    from landuse_kedro.scoring import load_predictor, predict_classes

    validation = tile_set["validation"]
    probabilities = landuse_classifier.predict(
        validation.images, batch_size=training["batch_size"], verbose=0
    )
    predicted = probabilities.argmax(axis=1)
    land = LandCover.from_params(land_cover)
    exports: dict[str, dict[str, Any]] = {}
    for precision, artifact in (("fp32", scoring_model_fp32), ("int8", scoring_model_int8)):
        exported = load_predictor(artifact.format, artifact.payload, threads=os.cpu_count() or 1)
        exported_predicted = predict_classes(exported, validation.images, scoring["batch_size"])
        scores = evaluation.six_and_three_class_scores(validation.labels, exported_predicted, land)
        exports[precision] = {
            "format": artifact.format,
            "bytes": len(artifact.payload),
            "same_class_as_keras": float(np.mean(exported_predicted == predicted)),
            "accuracy_6": scores["six_class"]["accuracy"],
            "accuracy_3": scores["three_class"]["accuracy"],
            **scores,
        }
    chosen = choose_precision(
        scoring.get("precision", "fp32"),
        scoring["backend"],
        {p: e["accuracy_6"] for p, e in exports.items()},
        float(training["int8"]["max_accuracy_drop"]),
    )
    calibrated = calibration_sample(
        len(tile_set["train"]), int(training["int8"]["calibration_tiles"]), training["seed"]
    )
    metrics = {
        "split": training["splits"]["validation"],
        "validation_tiles": len(validation),
        "train_tiles": len(tile_set["train"]),
        "early_stopping_on_validation": True,
        **evaluation.six_and_three_class_scores(validation.labels, predicted, land),
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
    metrics["chance_test"] = chance_test(
        exports[chosen]["accuracy_6"], validation.labels, len(land.classes), float(training["chance_p_value"])
    )
    metrics["train_tiles_per_class"] = tiles_per_class(
        tile_set["train"].labels, list(land.classes), int(training["min_train_tiles_per_class"])
    )
    metrics["scoring_model"]["promoted"] = bool(
        metrics["chance_test"]["above_chance"] or training["promote_chance_model"]
    )
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
        "data_preparation.min_purity (training_metrics.json: train_tiles_per_class); or set "
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
