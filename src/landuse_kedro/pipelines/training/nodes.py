"""Transfer learning on the prepared tiles: head first (backbone frozen), then optionally the top
blocks at a lower learning rate, then an evaluation on the validation split.

Nodes take and return objects only; the catalog decides where the model, its ONNX export and the
reports live.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from landuse_kedro import evaluation
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.pipelines.training.inputs import (
    TileArrays,
    check_splits,
    decode_split,
    make_dataset,
)

logger = logging.getLogger(__name__)


def assemble_tile_set(
    model_input_tiles: Mapping[str, Callable[[], Any]],
    tile_manifest: pd.DataFrame,
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> dict[str, TileArrays]:
    """Decode the training and validation tiles once, and refuse sets that cannot train or be scored."""
    classes = list(land_cover["classes"])
    splits = training["splits"]
    tile_set = {
        role: decode_split(model_input_tiles, tile_manifest, splits[role], classes, scoring["image_size"])
        for role in ("train", "validation")
    }
    check_splits(tile_set["train"], tile_set["validation"], classes)
    for role, tiles in tile_set.items():
        counts = np.bincount(tiles.labels, minlength=len(classes))
        logger.info("%s tiles: %d (%s)", role, len(tiles), ", ".join(f"{c} {n}" for c, n in zip(classes, counts)))
    return tile_set


def _fit_phase(model, phase: str, learning_rate: float, epochs: int, train, validation,
               training: Mapping[str, Any], records: list[dict[str, Any]]) -> float:
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
        on_epoch_end=lambda epoch, logs: records.append({
            "phase": phase,
            "epoch": epoch + 1,
            "learning_rate": learning_rate,
            **{key: float(value) for key, value in logs.items()},
            "seconds": round(time.perf_counter() - clock["start"], 2),
        }),
    )
    logger.info("Phase %s: up to %d epochs at learning rate %g", phase, epochs, learning_rate)
    model.fit(train, validation_data=validation, epochs=epochs, shuffle=False,  # tf.data shuffles
              verbose=2, callbacks=[stop, log])
    return min(r["val_loss"] for r in records if r["phase"] == phase)


def train_classifier(
    tile_set: dict[str, TileArrays],
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Train the head on the frozen backbone, then fine-tune the top blocks if asked.

    Fine-tuned weights are kept only if they beat the head-only model's best validation loss, so
    fine-tuning can never make the saved model worse on it. The validation split serves early
    stopping as in the walkthrough; the metrics say so.
    """
    import keras

    from landuse_kedro.models import build_classifier, unfreeze_top

    keras.utils.set_random_seed(training["seed"])
    classes = list(land_cover["classes"])
    model = build_classifier(
        backbone=training["backbone"],
        weights=training["weights"],
        num_classes=len(classes),
        image_size=scoring["image_size"],
        dropout=training["dropout"],
    )
    train = make_dataset(tile_set["train"], training["batch_size"], training["seed"], training["augmentation"])
    validation = make_dataset(tile_set["validation"], training["batch_size"], training["seed"])
    records: list[dict[str, Any]] = []
    started = time.perf_counter()

    best = _fit_phase(model, "head", training["learning_rate"], training["epochs"],
                      train, validation, training, records)
    kept = "head"
    from_scratch = str(training["weights"]).lower() in ("none", "null")
    if from_scratch:
        logger.info("weights: none trains the whole network from scratch: no fine-tuning phase.")
    elif training["fine_tune_epochs"] > 0 and training["fine_tune_blocks"] > 0:
        head_weights = {v.path: v.numpy() for v in model.weights}
        unfrozen = unfreeze_top(model, training["fine_tune_blocks"])
        logger.info("Fine-tuning %d backbone layers (top %d blocks)", len(unfrozen), training["fine_tune_blocks"])
        tuned = _fit_phase(model, "fine_tune", training["fine_tune_learning_rate"],
                           training["fine_tune_epochs"], train, validation, training, records)
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
        "train_tiles": len(tile_set["train"]),
        "validation_tiles": len(tile_set["validation"]),
        "classes": classes,
    }
    return model, history


def export_scoring_model(landuse_classifier: Any, scoring: Mapping[str, Any]) -> ModelArtifact:
    """The model in the format the scoring backend runs: ONNX (about 1.5-3x faster on CPU) or .keras."""
    from landuse_kedro.models.onnx_export import keras_to_artifact, keras_to_onnx

    exporters = {"onnx": keras_to_onnx, "keras": keras_to_artifact}
    if scoring["backend"] not in exporters:
        raise ValueError(f"scoring.backend is '{scoring['backend']}': expected one of {sorted(exporters)}.")
    return exporters[scoring["backend"]](landuse_classifier)


def evaluate_classifier(
    landuse_classifier: Any,
    tile_set: dict[str, TileArrays],
    scoring_model: ModelArtifact,
    training_history: Mapping[str, Any],
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> dict[str, Any]:
    """6-class and 3-class scores of the saved Keras model on the validation split, and how often
    the exported scoring model picks the same class (it should be every time)."""
    from landuse_kedro.scoring import load_predictor

    validation = tile_set["validation"]
    probabilities = landuse_classifier.predict(validation.images, batch_size=training["batch_size"], verbose=0)
    predicted = probabilities.argmax(axis=1)
    exported = load_predictor(scoring_model.format, scoring_model.payload, threads=os.cpu_count() or 1)
    exported_predicted = np.concatenate([
        exported(validation.images[i:i + scoring["batch_size"]]).argmax(axis=1)
        for i in range(0, len(validation), scoring["batch_size"])
    ])
    classes = list(land_cover["classes"])
    metrics = {
        "split": training["splits"]["validation"],
        "validation_tiles": len(validation),
        "train_tiles": len(tile_set["train"]),
        "early_stopping_on_validation": True,
        "six_class": evaluation.classification_scores(validation.labels, predicted, classes),
        "three_class": evaluation.classification_scores(
            evaluation.to_three_class(validation.labels, land_cover),
            evaluation.to_three_class(predicted, land_cover),
            evaluation.three_class_names(land_cover),
        ),
        "model": {key: training[key] for key in ("backbone", "weights", "dropout")},
        "kept_phase": training_history["kept_phase"],
        "training_seconds": training_history["seconds"],
        "scoring_model": {
            "backend": scoring["backend"],
            "format": scoring_model.format,
            "bytes": len(scoring_model.payload),
            "same_class_as_keras": float(np.mean(exported_predicted == predicted)),
        },
        "classes": classes,
    }
    metrics["accuracy_6"] = metrics["six_class"]["accuracy"]
    metrics["accuracy_3"] = metrics["three_class"]["accuracy"]
    logger.info("Validation accuracy: %.1f%% (6 classes), %.1f%% (3 classes) on %d tiles",
                100 * metrics["accuracy_6"], 100 * metrics["accuracy_3"], len(validation))
    return metrics


def plot_confusion_matrices(training_metrics: Mapping[str, Any]):
    return evaluation.confusion_figure(training_metrics)


def plot_learning_curves(training_history: Mapping[str, Any]):
    return evaluation.learning_curve_figure(training_history)
