"""Transfer learning on the prepared tiles: head first (backbone frozen, trained on the backbone's
features, which the Spark workers compute and ``tile_features`` keeps), then optionally the top blocks
at a lower learning rate (on images), then the scoring exports (fp32 ONNX and its calibrated int8
twin) and an evaluation of each on the validation split.

Nodes take and return objects only; the catalog decides where the model, its ONNX export, the feature
table and the reports live. No node decodes a split into memory: images are streamed batch by batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, get_args

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landuse_kedro import evaluation
from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import ModelArtifact, Precision
from landuse_kedro.models.quantize import calibration_sample
from landuse_kedro.pipelines.training.inputs import check_splits, image_dataset, tile_table
from landuse_kedro.spark import active_spark_session
from landuse_kedro.tile_features import (
    FEATURE_SCHEMA,
    FeatureExtractor,
    WorkerSettings,
    collect_features,
    compute_features,
    dihedral_views,
    epoch_batches,
    failed_tiles,
    feature_model_key,
    hash_files,
    present_views,
    read_tiles,
    tile_batches,
)

logger = logging.getLogger(__name__)

PRECISIONS = get_args(Precision)
EVALUATION_BATCH = 16
"""Validation tiles per batch when three models score them in turn: activation memory grows with the batch
(Keras and two ONNX Runtime sessions at 64 tiles took the driver to 2.9 GB on the sample scene)."""


def assemble_tile_set(
    training_tile_files: FileIndex,
    tile_manifest: pd.DataFrame,
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> pd.DataFrame:
    """List the training and validation tiles (their files, not their pixels), and refuse sets that
    cannot train or be scored (and a ``scoring.precision`` that could never be exported) before any
    training time is spent.

    Args:
        training_tile_files: ``training_tile_files``: the tile PNGs' URLs.
        tile_manifest: ``tile_manifest``; it, not the folder listing, decides which tiles belong.
        land_cover: ``params:land_cover`` (the class order of the labels).
        training: ``params:training`` (``splits``: the manifest's split names).
        scoring: ``params:scoring`` (``precision``).

    Returns:
        ``training_tile_set``: one row per tile (``tile_id``, ``partition``, ``url``, ``role`` train or
        validation, ``split``, ``class_name``, ``label``).

    Raises:
        ValueError: ``scoring.precision`` is not fp32 or int8; a manifest class is not in
            ``land_cover``, a tile has no file; a split is empty, training has a single class, or a
            class has tiles in only one split.
    """
    if scoring.get("precision", "fp32") not in PRECISIONS:
        raise ValueError(
            f"scoring.precision is '{scoring['precision']}': expected one of {list(PRECISIONS)}."
        )
    classes = list(LandCover.from_params(land_cover).classes)
    tiles = tile_table(training_tile_files, tile_manifest, training["splits"], classes)
    labels = {role: tiles.loc[tiles["role"] == role, "label"].to_numpy() for role in ("train", "validation")}
    check_splits(labels["train"], labels["validation"], classes)
    for role, values in labels.items():
        counts = np.bincount(values, minlength=len(classes))
        logger.info(
            "%s tiles: %d (%s)", role, len(values), ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
        )
    return tiles


def _uses_features(training: Mapping[str, Any]) -> bool:
    """The head trains on cached features unless told not to, or when nothing is frozen (from scratch)."""
    from_scratch = str(training["weights"]).lower() in ("none", "null")
    return bool(training.get("cache_features", True)) and not from_scratch


def _classifier(land_cover: Mapping[str, Any], training: Mapping[str, Any], scoring: Mapping[str, Any]):
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


def _feature_key(features_model, training: Mapping[str, Any], scoring: Mapping[str, Any]) -> str:
    settings = {
        "backbone": training["backbone"],
        "weights": str(training["weights"]).lower(),
        "image_size": int(scoring["image_size"]),
        "mid_level_features": bool(training.get("mid_level_features", True)),
    }
    return feature_model_key(settings, [w.numpy() for w in features_model.weights])


def extract_tile_features(
    training_tile_set: pd.DataFrame,
    training_tile_files: FileIndex,
    previous_tile_features: Any,
    land_cover: Mapping[str, Any],
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> tuple[Any, pd.DataFrame]:
    """Have the Spark workers compute the frozen backbone's features of every tile that
    ``tile_features`` does not hold yet: training tiles in each dihedral view ``training.augmentation``
    allows, validation tiles as they are. The workers hash every tile file first (a tile is known by
    its bytes), so tiles already computed, under any name, cost nothing.

    Args:
        training_tile_set: ``training_tile_set`` from :func:`assemble_tile_set`.
        training_tile_files: ``training_tile_files`` (protocol and storage options of the URLs).
        previous_tile_features: ``previous_tile_features``: the table so far, None before the first run.
        land_cover: ``params:land_cover`` (the number of outputs of the classifier built).
        training: ``params:training`` (backbone, weights, ``mid_level_features``, ``augmentation``,
            ``cache_features``, seed).
        scoring: ``params:scoring`` (``image_size``, ``batch_size``, ``threads_per_worker``, ``prefetch``).

    Returns:
        ``tile_features``: the new rows (lazy: saving them runs the Spark job), appended to the table.
        ``training_tile_keys``: ``training_tile_set`` with ``content_sha256``, ``feature_model`` and
        ``computed`` (this run computes its features); the keys are null when the head trains on images.

    Raises:
        ValueError: A tile file cannot be read.
    """
    from landuse_kedro.models import features_and_head
    from landuse_kedro.models.onnx_export import keras_to_onnx

    spark = active_spark_session()
    keys = training_tile_set.copy()
    if not _uses_features(training):
        keys["content_sha256"], keys["feature_model"], keys["computed"] = None, None, False
        return spark.createDataFrame([], FEATURE_SCHEMA), keys
    features_model, _ = features_and_head(_classifier(land_cover, training, scoring))
    key = _feature_key(features_model, training, scoring)
    hashes = hash_files(training_tile_files, keys["url"].tolist()).set_index("url")
    unreadable = hashes[hashes["error"].notna()]
    if len(unreadable):
        raise ValueError(
            f"{len(unreadable)} training tiles cannot be read, e.g. "
            + "; ".join(f"{url}: {error}" for url, error in unreadable["error"].head(3).items())
        )
    keys["content_sha256"] = hashes.loc[keys["url"], "content_sha256"].to_numpy()
    keys["feature_model"] = key
    present = present_views(previous_tile_features, key)
    all_views = dihedral_views(training["augmentation"])
    needed = {sha: set() for sha in keys["content_sha256"]}
    for sha, role in zip(keys["content_sha256"], keys["role"]):
        needed[sha] |= set(all_views) if role == "train" else {0}
    missing = {sha: sorted(views - present.get(sha, set())) for sha, views in needed.items()}
    missing = {sha: views for sha, views in missing.items() if views}
    keys["computed"] = keys["content_sha256"].isin(missing)
    todo = keys.drop_duplicates("content_sha256")
    todo = todo[todo["content_sha256"].isin(missing)].copy()
    todo["views"] = todo["content_sha256"].map(missing)
    logger.info(
        "Backbone features (feature_model %s): %d of %d tile contents to compute on Spark (%d tile-views), "
        "%d already in tile_features",
        key,
        len(todo),
        len(needed),
        sum(len(v) for v in missing.values()),
        len(needed) - len(todo),
    )
    if todo.empty:
        return spark.createDataFrame([], FEATURE_SCHEMA), keys
    extractor = FeatureExtractor(key, keras_to_onnx(features_model).payload)
    settings = WorkerSettings(
        image_size=int(scoring["image_size"]),
        batch_size=int(scoring["batch_size"]),
        threads=int(scoring["threads_per_worker"]),
        prefetch=bool(scoring.get("prefetch", True)),
    )
    return compute_features(training_tile_files, todo, extractor, settings), keys


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
    training tile once, in a random one of its dihedral views, streamed from ``tile_features`` in a
    seeded order (driver memory: a batch of features and the validation split's). ``cache_features:
    false`` trains it on images, colour jitter included. Images are read from the tile files batch by
    batch. Fine-tuning always runs on images, and its weights are kept only if they beat the head-only
    model's best validation loss, so it never makes the saved model worse on it. The validation split
    serves early stopping, as in the walkthrough.

    Args:
        training_tile_keys: ``training_tile_keys`` from :func:`extract_tile_features`.
        tile_features: ``tile_features``: the whole table (None when nothing was ever computed).
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
    from landuse_kedro.models import features_and_head, unfreeze_top

    classes = list(LandCover.from_params(land_cover).classes)
    model = _classifier(land_cover, training, scoring)
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
    from_scratch = str(training["weights"]).lower() in ("none", "null")
    feature_cache = None
    if _uses_features(training):
        feature_model, head = features_and_head(model)
        key = _feature_key(feature_model, training, scoring)
        if set(training_tile_keys["feature_model"]) != {key}:
            raise ValueError(
                f"training_tile_keys name feature_model {sorted(set(training_tile_keys['feature_model']))}, "
                f"but these settings make {key}: extract_tile_features ran with other parameters."
            )
        views = dihedral_views(training["augmentation"])
        feature_cache = _check_features(tile_features, key, training_tile_keys, views)
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
        if jitter := [k for k in ("brightness", "contrast", "saturation") if training["augmentation"].get(k)]:
            logger.info(
                "Colour jitter (%s) is not cached: it applies to image training (fine-tuning) only.",
                ", ".join(jitter),
            )
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
        feature_cache |= {"features": int(validation_features.shape[-1])}
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
        "head_input": "images" if feature_cache is None else "cached_features",
        "feature_cache": feature_cache,
        "train_tiles": len(train),
        "validation_tiles": len(validation),
        "classes": classes,
    }
    return model, history


def _check_features(table: Any, key: str, keys: pd.DataFrame, views: tuple[int, ...]) -> dict[str, Any]:
    """Refuse to train on a table that misses this run's tiles, naming the files that failed on the
    workers and why; say what was computed and what reused."""
    computed = keys.loc[keys["computed"], "content_sha256"].unique()
    if table is None:
        raise ValueError("tile_features is empty: extract_tile_features computed nothing to train on.")
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
    scoring_model_fp32: ModelArtifact,
    training_tile_set: pd.DataFrame,
    training_tile_files: FileIndex,
    training: Mapping[str, Any],
    scoring: Mapping[str, Any],
) -> ModelArtifact:
    """Make the calibrated int8 twin of the fp32 export. Calibration sees a seeded sample of training tiles
    only (read from their files), so the int8 model's validation accuracy is measured on tiles it never saw.

    Args:
        scoring_model_fp32: ``scoring_model_fp32`` from :func:`export_scoring_model`.
        training_tile_set: ``training_tile_set`` (its training tiles).
        training_tile_files: ``training_tile_files`` (to read them).
        training: ``params:training`` (``int8.calibration_tiles``, ``seed``).
        scoring: ``params:scoring`` (``image_size``).

    Returns:
        ``scoring_model_int8``: the int8 ONNX model.
    """
    from landuse_kedro.models.onnx_export import artifact_to_onnx
    from landuse_kedro.models.quantize import quantize_onnx

    train = training_tile_set[training_tile_set["role"] == "train"]
    chosen = calibration_sample(len(train), int(training["int8"]["calibration_tiles"]), training["seed"])
    started = time.perf_counter()
    images = read_tiles(training_tile_files, train["url"].iloc[chosen].tolist(), scoring["image_size"])
    int8 = quantize_onnx(artifact_to_onnx(scoring_model_fp32), images)
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
    from landuse_kedro.models.predictor import load_predictor

    validation = training_tile_set[training_tile_set["role"] == "validation"]
    train = training_tile_set[training_tile_set["role"] == "train"]
    labels = validation["label"].to_numpy(np.int32)
    threads = os.cpu_count() or 1
    models = {
        "keras": lambda images: np.asarray(landuse_classifier.predict_on_batch(images)),
        **{
            precision: load_predictor(artifact.format, artifact.payload, threads=threads)
            for precision, artifact in (("fp32", scoring_model_fp32), ("int8", scoring_model_int8))
        },
    }
    classes_of: dict[str, list[np.ndarray]] = {name: [] for name in models}
    for images in tile_batches(
        training_tile_files, validation["url"].tolist(), scoring["image_size"], EVALUATION_BATCH
    ):
        for name, predict in models.items():
            classes_of[name].append(predict(images).argmax(axis=1))
    predicted_by = {name: np.concatenate(parts) for name, parts in classes_of.items()}
    predicted = predicted_by["keras"]
    land = LandCover.from_params(land_cover)
    exports: dict[str, dict[str, Any]] = {}
    for precision, artifact in (("fp32", scoring_model_fp32), ("int8", scoring_model_int8)):
        exported_predicted = predicted_by[precision]
        scores = evaluation.six_and_three_class_scores(labels, exported_predicted, land)
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
    metrics["chance_test"] = chance_test(
        exports[chosen]["accuracy_6"], labels, len(land.classes), float(training["chance_p_value"])
    )
    metrics["train_tiles_per_class"] = tiles_per_class(
        train["label"].to_numpy(np.int32), list(land.classes), int(training["min_train_tiles_per_class"])
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
