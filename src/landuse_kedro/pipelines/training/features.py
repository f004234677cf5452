"""The feature extraction node: which tiles' backbone features ``tile_features`` still lacks (tiles are
known by their bytes and the features model by its key), and the Spark job that computes them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.pipelines.training.classifier import head_trains_on_features, seeded_classifier
from landuse_kedro.spark import active_spark_session
from landuse_kedro.tile_features import (
    FEATURE_SCHEMA,
    FeatureExtractor,
    WorkerSettings,
    compute_features,
    dihedral_views,
    feature_model_key,
    hash_files,
    present_views,
)

logger = logging.getLogger(__name__)


def backbone_feature_key(features_model, training: Mapping[str, Any], scoring: Mapping[str, Any]) -> str:
    """The key of the features model's rows in ``tile_features``: its settings and weights, so a run
    with other settings or weights never reads features it did not make."""
    settings = {
        "backbone": training["backbone"],
        "weights": str(training["weights"]).lower(),
        "image_size": int(scoring["image_size"]),
        "mid_level_features": bool(training.get("mid_level_features", True)),
    }
    return feature_model_key(settings, [w.numpy() for w in features_model.weights])


def _content_hashes_or_refuse(training_tile_files: FileIndex, urls: list[str]) -> pd.DataFrame:
    """Each tile file's ``content_sha256`` (indexed by URL); a file that cannot be read stops the run
    here, before any features are computed."""
    hashes = hash_files(training_tile_files, urls).set_index("url")
    unreadable = hashes[hashes["error"].notna()]
    if len(unreadable):
        raise ValueError(
            f"{len(unreadable)} training tiles cannot be read, e.g. "
            + "; ".join(f"{url}: {error}" for url, error in unreadable["error"].head(3).items())
        )
    return hashes


def _views_per_content(
    keys: pd.DataFrame, present: Mapping[str, set[int]], augmentation: Mapping[str, Any]
) -> tuple[dict[str, set[int]], dict[str, list[int]]]:
    """The views each tile content needs (training tiles every dihedral view the augmentation allows,
    validation tiles as they are) and, of those, the ones ``tile_features`` lacks (contents lacking
    none left out)."""
    all_views = dihedral_views(augmentation)
    needed: dict[str, set[int]] = {sha: set() for sha in keys["content_sha256"]}
    for sha, role in zip(keys["content_sha256"], keys["role"]):
        needed[sha] |= set(all_views) if role == "train" else {0}
    missing = {sha: sorted(views - present.get(sha, set())) for sha, views in needed.items()}
    return needed, {sha: views for sha, views in missing.items() if views}


def _contents_to_compute(keys: pd.DataFrame, missing: Mapping[str, list[int]]) -> pd.DataFrame:
    """One row per tile content with missing views (its first tile's file), ``views`` the ones to compute."""
    todo = keys.drop_duplicates("content_sha256")
    todo = todo[todo["content_sha256"].isin(missing)].copy()
    todo["views"] = todo["content_sha256"].map(missing)
    return todo


def _worker_settings(scoring: Mapping[str, Any]) -> WorkerSettings:
    """The workers read and batch tiles as the scorer does: the same ``params:scoring`` settings."""
    return WorkerSettings(
        image_size=int(scoring["image_size"]),
        batch_size=int(scoring["batch_size"]),
        threads=int(scoring["threads_per_worker"]),
        prefetch=bool(scoring.get("prefetch", True)),
    )


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
    if not head_trains_on_features(training):
        keys["content_sha256"], keys["feature_model"], keys["computed"] = None, None, False
        return spark.createDataFrame([], FEATURE_SCHEMA), keys
    features_model, _ = features_and_head(seeded_classifier(land_cover, training, scoring))
    key = backbone_feature_key(features_model, training, scoring)
    hashes = _content_hashes_or_refuse(training_tile_files, keys["url"].tolist())
    keys["content_sha256"] = hashes.loc[keys["url"], "content_sha256"].to_numpy()
    keys["feature_model"] = key
    present = present_views(previous_tile_features, key)
    needed, missing = _views_per_content(keys, present, training["augmentation"])
    keys["computed"] = keys["content_sha256"].isin(missing)
    todo = _contents_to_compute(keys, missing)
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
    return compute_features(training_tile_files, todo, extractor, _worker_settings(scoring)), keys
