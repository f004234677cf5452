"""The training node, phase by phase: the head on the frozen backbone (on cached features streamed from
``tile_features``, or on images), then the optional fine-tuning of the top blocks on images (kept only
if it beats the head), then the history of every epoch. Each phase is one Keras fit with early stopping
on the validation split."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.training.classifier import (
    head_trains_on_features,
    seeded_classifier,
    trains_from_scratch,
)
from landuse_kedro.pipelines.training.features import backbone_feature_key
from landuse_kedro.pipelines.training.inputs import image_dataset
from landuse_kedro.tile_features import collect_features, dihedral_views, epoch_batches, failed_tiles

logger = logging.getLogger(__name__)

ImageStreams = Callable[[], tuple[Any, Any]]
"""Makes the (training, validation) image datasets: each image phase gets its own, made when it starts."""


def _fit_phase(
    model,
    phase: str,
    learning_rate: float,
    epochs: int,
    train,
    validation,
    training: Mapping[str, Any],
    records: list[dict[str, Any]],
    steps_per_epoch: int | None = None,
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
        steps_per_epoch=steps_per_epoch,  # a stream of batches (cached features) has no end
        shuffle=False,  # tf.data and the feature stream shuffle
        verbose=2,
        callbacks=[stop, log],
    )
    return min(r["val_loss"] for r in records if r["phase"] == phase)


def _refuse_other_feature_model(training_tile_keys: pd.DataFrame, key: str) -> None:
    """The keys must name the features model these settings build, or the head would train on
    features of another backbone, weights or image size."""
    if set(training_tile_keys["feature_model"]) != {key}:
        raise ValueError(
            f"training_tile_keys name feature_model {sorted(set(training_tile_keys['feature_model']))}, "
            f"but these settings make {key}: extract_tile_features ran with other parameters."
        )


def _feature_cache_summary(
    table: Any, key: str, keys: pd.DataFrame, views: tuple[int, ...]
) -> dict[str, Any]:
    """Refuse to train on a table that misses this run's tiles, naming the files that failed on the
    workers and why; say what was computed and what reused."""
    computed = keys.loc[keys["computed"], "content_sha256"].unique()
    failed = failed_tiles(table, key, list(computed)) if len(computed) else []
    if failed:
        raise ValueError(
            f"{len(failed)} training tiles could not be used: "
            + "; ".join(failed[:3])
            + (" ..." if len(failed) > 3 else "")
        )
    reused = keys.loc[~keys["computed"], "content_sha256"].nunique()
    logger.info(
        "Head training reads features of %d tile contents from tile_features (feature_model %s): "
        "%d computed by this run, %d reused",
        keys["content_sha256"].nunique(),
        key,
        len(computed),
        reused,
    )
    return {
        "feature_model": key,
        "views": len(views),
        "computed_tiles": int(len(computed)),
        "reused_tiles": int(reused),
    }


def _log_uncached_colour_jitter(augmentation: Mapping[str, Any]) -> None:
    """Cached features are of the dihedral views only: say so when colour jitter is asked for."""
    if jitter := [k for k in ("brightness", "contrast", "saturation") if augmentation.get(k)]:
        logger.info(
            "Colour jitter (%s) is not cached: it applies to image training (fine-tuning) only.",
            ", ".join(jitter),
        )


def _fit_head_on_features(
    model,
    training_tile_keys: pd.DataFrame,
    tile_features: Any,
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
    records: list[dict[str, Any]],
) -> tuple[float, dict[str, Any]]:
    """Fit the head alone on the backbone's features in ``tile_features``: each epoch every training
    tile once, in a random one of its views, streamed in a seeded order; the validation split's
    features are collected once. Returns the best validation loss and the feature cache's summary."""
    from landuse_kedro.models import features_and_head

    batch, seed = training["batch_size"], training["seed"]
    train = training_tile_keys[training_tile_keys["role"] == "train"]
    validation = training_tile_keys[training_tile_keys["role"] == "validation"]
    feature_model, head = features_and_head(model)
    key = backbone_feature_key(feature_model, training, scoring)
    _refuse_other_feature_model(training_tile_keys, key)
    views = dihedral_views(training["augmentation"])
    feature_cache = _feature_cache_summary(tile_features, key, training_tile_keys, views)
    validation_features = collect_features(tile_features, key, validation["content_sha256"].tolist())
    stream = epoch_batches(
        tile_features,
        key,
        train["content_sha256"].tolist(),
        train["label"].to_numpy(np.int32),
        views,
        batch,
        seed,
    )
    _log_uncached_colour_jitter(training["augmentation"])
    try:
        best = _fit_phase(
            head,
            "head",
            training["learning_rate"],
            training["epochs"],
            stream,
            (validation_features, validation["label"].to_numpy(np.int32)),
            training,
            records,
            steps_per_epoch=-(-len(train) // batch),
        )
    finally:
        stream.close()
    return best, feature_cache | {"features": int(validation_features.shape[-1])}


def _fine_tune_if_it_helps(
    model,
    best: float,
    images: ImageStreams,
    training: Mapping[str, Any],
    records: list[dict[str, Any]],
) -> tuple[float, str]:
    """Fine-tune the top blocks on images when asked (not from scratch: nothing is frozen), and keep
    the tuned weights only if they beat the head-only ``best`` validation loss, so fine-tuning never
    makes the saved model worse on it. Returns the kept phase's best validation loss and its name."""
    from landuse_kedro.models import unfreeze_top

    if trains_from_scratch(training):
        logger.info("weights: none trains the whole network from scratch: no fine-tuning phase.")
        return best, "head"
    if not (training["fine_tune_epochs"] > 0 and training["fine_tune_blocks"] > 0):
        return best, "head"
    head_weights = {v.path: v.numpy() for v in model.weights}
    unfrozen = unfreeze_top(model, training["fine_tune_blocks"])
    logger.info("Fine-tuning %d backbone layers (top %d blocks)", len(unfrozen), training["fine_tune_blocks"])
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
        return tuned, "fine_tune"
    logger.info("Fine-tuning did not beat val_loss %.4f: keeping the head-only weights.", best)
    for variable in model.weights:
        variable.assign(head_weights[variable.path])
    return best, "head"


def train_classifier(
    training_tile_keys: pd.DataFrame,
    tile_features: Any,
    training_tile_files: FileIndex,
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Train the head on the frozen backbone, then fine-tune the top blocks if asked.

    With pretrained weights and ``training.cache_features`` (default), the head trains on the
    backbone's features that :func:`extract_tile_features` had the workers compute: each epoch every
    training tile once, in a random one of its dihedral views, read from ``tile_features``' files with
    Arrow (no Spark job) in a seeded order (driver memory: one view of each tile's features, float16,
    and the validation split's). ``cache_features:
    false`` trains it on images, colour jitter included. Images are read from the tile files batch by
    batch. Fine-tuning always runs on images, and its weights are kept only if they beat the head-only
    model's best validation loss, so it never makes the saved model worse on it. The validation split
    serves early stopping, as in the walkthrough.

    Args:
        training_tile_keys: ``training_tile_keys`` from :func:`extract_tile_features`.
        tile_features: ``tile_features@arrow``: the whole table, unread (scanned once per epoch).
        training_tile_files: ``training_tile_files`` (to read images).
        land_cover: ``params:land_cover`` (the classes: the model's outputs).
        training: ``params:training`` (backbone, weights, phases, augmentation, seed).
        scoring: ``params:scoring`` (``image_size``).

    Returns:
        ``landuse_classifier``: the Keras model with the kept phase's weights.
        ``training_history``: per-epoch records of each phase, the kept phase, best validation loss,
        timings and the head's input (images or cached features).

    Raises:
        ValueError: A tile's features could not be computed (its file and the reason are named), or the
            table lacks rows of this run's tiles.
    """
    classes = list(LandCover.from_params(land_cover).classes)
    model = seeded_classifier(land_cover, training, scoring)
    batch, seed, size = training["batch_size"], training["seed"], scoring["image_size"]
    train = training_tile_keys[training_tile_keys["role"] == "train"]
    validation = training_tile_keys[training_tile_keys["role"] == "validation"]

    def images() -> tuple[Any, Any]:
        return (
            image_dataset(training_tile_files, train, size, batch, seed, training["augmentation"]),
            image_dataset(training_tile_files, validation, size, batch, seed),
        )

    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    feature_cache = None
    if head_trains_on_features(training):
        best, feature_cache = _fit_head_on_features(
            model, training_tile_keys, tile_features, training, scoring, records
        )
    else:
        best = _fit_phase(
            model, "head", training["learning_rate"], training["epochs"], *images(), training, records
        )
    head_seconds = round(time.perf_counter() - started, 1)
    best, kept = _fine_tune_if_it_helps(model, best, images, training, records)
    history = {
        "epochs": records,
        "kept_phase": kept,
        "best_val_loss": best,
        "seconds": round(time.perf_counter() - started, 1),
        "head_seconds": head_seconds,
        "head_input": "images" if feature_cache is None else "cached_features",
        "feature_cache": feature_cache,
        "train_tiles": len(train),
        "validation_tiles": len(validation),
        "classes": classes,
    }
    return model, history
