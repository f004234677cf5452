"""The frozen backbone's features of every training tile in each of its dihedral views, computed once.

Why: with pretrained weights the backbone is frozen and its BatchNorm runs in inference mode, so a
tile's pooled features depend on its pixels only. Training the head on images pushed every tile
through the backbone again each epoch (and the validation tiles after each epoch); caching costs one
backbone pass per tile and view, after which a head epoch is a few milliseconds. The views are the
flips and quarter turns that ``training.augmentation`` allows (8 with both), the same geometry the
image pipeline draws from. Colour jitter is not cached: caching a jittered copy per view measured
no better head on the sample scene; it still applies to fine-tuning, which runs on images.

The cache lives in memory (about 26 MB for 576 tiles x 8 views x 1400 floats): a file in
``05_model_input`` would add a save and a load per run and could not be reused by the next run
(``benchmarks/training_speed.py`` measures the round trip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from landuse_kedro.pipelines.training.inputs import TileArrays


def dihedral_views(augmentation: Mapping[str, Any]) -> tuple[int, ...]:
    """View ids ``4 * flip + quarter_turns`` that the augmentation settings allow; 0 is the tile as is."""
    flips = (0, 1) if augmentation.get("flip", True) else (0,)
    turns = range(4) if augmentation.get("rotate90", True) else range(1)
    return tuple(4 * flip + turn for flip in flips for turn in turns)


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """``images`` (N, H, W, C) left-right flipped when ``view >= 4``, then turned ``view % 4`` quarter turns
    (the same ops as ``inputs.augment``)."""
    if view >= 4:
        images = images[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(images, view % 4, axes=(1, 2)))


@dataclass(frozen=True)
class FeatureCache:
    """``train`` (views, N, D) float32, one slice per view; ``validation`` (M, D) of the tiles as they are."""

    train: np.ndarray
    train_labels: np.ndarray
    validation: np.ndarray
    validation_labels: np.ndarray
    views: tuple[int, ...]


def feature_predictor(features_model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The features model exported to ONNX and run by ONNX Runtime, as scoring runs the classifier:
    about 1.5x fewer CPU seconds per tile than TensorFlow on these CPUs, for a 3-5 s export (the
    features differ from TensorFlow's by about 1e-6)."""
    from landuse_kedro.models.onnx_export import keras_to_onnx
    from landuse_kedro.scoring import load_predictor

    return load_predictor("onnx", keras_to_onnx(features_model).payload, threads)


def extract(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, views: tuple[int, ...], batch_size: int
) -> np.ndarray:
    """(len(views), N, D) features of ``images`` in each view, batch by batch."""
    out: np.ndarray | None = None
    for v, view in enumerate(views):
        for start in range(0, len(images), batch_size):
            batch = predict(dihedral(images[start : start + batch_size], view))
            if out is None:
                out = np.empty((len(views), len(images), batch.shape[-1]), np.float32)
            out[v, start : start + len(batch)] = batch
    return out


def cache_features(
    features_model,
    train: TileArrays,
    validation: TileArrays,
    augmentation: Mapping[str, Any],
    batch_size: int,
    threads: int,
) -> FeatureCache:
    """Training tiles in every view ``augmentation`` allows, validation tiles as they are."""
    predict = feature_predictor(features_model, threads)
    views = dihedral_views(augmentation)
    return FeatureCache(
        train=extract(predict, train.images, views, batch_size),
        train_labels=train.labels,
        validation=extract(predict, validation.images, (0,), batch_size)[0],
        validation_labels=validation.labels,
        views=views,
    )


def train_dataset(cache: FeatureCache, batch_size: int, seed: int):
    """Each epoch every tile once, in a random one of its cached views, in a new seeded order: the
    image pipeline's epoch (one random flip and turn per tile), without the backbone."""
    import tensorflow as tf

    n_views, n = cache.train.shape[:2]
    table = tf.constant(cache.train.reshape(n_views * n, -1))
    tiles = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), cache.train_labels))
    tiles = tiles.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(tiles, draws).map(
        lambda pair, draw: (tf.gather(table, tf.math.floormod(draw, n_views) * n + pair[0]), pair[1])
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def validation_dataset(cache: FeatureCache, batch_size: int):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((cache.validation, cache.validation_labels)).batch(batch_size)
