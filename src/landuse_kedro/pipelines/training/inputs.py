"""The training set as a table of tile files (the ``assemble_tile_set`` node, which refuses sets that
cannot train or be scored), and the seeded ``tf.data`` pipelines that stream their images to Keras
(phases that train on images: fine-tuning, ``cache_features: false``, from scratch).

Nothing here decodes a split into memory: at the walkthrough's 44,184 training tiles that was 6.6 GB
on the driver. Images are read batch by batch from the tile files, as the scorer reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, get_args

import numpy as np
import pandas as pd

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import Precision

logger = logging.getLogger(__name__)

ROLES = ("train", "validation")
PRECISIONS = get_args(Precision)


def partition_key(url: str) -> str:
    """``<split>/<Class>/<tile_id>``, the manifest's ``partition``, of a tile file's URL."""
    path = PurePosixPath(url)
    return "/".join((*path.parent.parts[-2:], path.stem))


def tile_table(
    tile_files: FileIndex, manifest: pd.DataFrame, splits: Mapping[str, str], classes: list[str]
) -> pd.DataFrame:
    """The manifest's tiles of the training and validation splits, one row each (``tile_id``,
    ``partition``, ``url``, ``role``, ``class_name``, ``label``), in partition order; the manifest
    (not the folder listing) decides which tiles belong, so a stray file never sneaks into training."""
    urls = {partition_key(url): url for url in tile_files.urls}
    frames = []
    for role in ROLES:
        rows = manifest[manifest["split"] == splits[role]].sort_values("partition")
        unknown = sorted(set(rows["class_name"]) - set(classes))
        if unknown:
            raise ValueError(
                f"tile_manifest has classes {unknown} in split '{splits[role]}' that are not in "
                f"land_cover.classes {classes}."
            )
        missing = [key for key in rows["partition"] if key not in urls]
        if missing:
            raise ValueError(
                f"{len(missing)} tiles of split '{splits[role]}' are in tile_manifest but not in "
                f"model_input_tiles, e.g. {missing[:3]}."
            )
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": rows["tile_id"].astype(str).to_numpy(),
                    "partition": rows["partition"].to_numpy(),
                    "url": [urls[key] for key in rows["partition"]],
                    "role": role,
                    "split": splits[role],
                    "class_name": rows["class_name"].to_numpy(),
                    "label": rows["class_name"]
                    .map({name: i for i, name in enumerate(classes)})
                    .to_numpy(np.int32),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def check_splits(train: np.ndarray, validation: np.ndarray, classes: list[str]) -> None:
    """Refuse sets (their labels) that would train or score meaninglessly, naming what is wrong."""
    if len(train) == 0:
        raise ValueError("The training split is empty: data_preparation produced no training tiles.")
    in_train = set(train.tolist())
    if len(in_train) < 2:
        raise ValueError(
            f"The training split has a single class {[classes[i] for i in in_train]}: "
            "a classifier needs at least two."
        )
    if len(validation) == 0:
        raise ValueError("The validation split is empty: nothing to stop early on or to evaluate.")
    in_validation = set(validation.tolist())
    if absent := [c for i, c in enumerate(classes) if i in in_train and i not in in_validation]:
        raise ValueError(
            f"Classes {absent} have training tiles but none in validation: their accuracy "
            "could not be measured. Add validation tiles or drop the classes from land_cover.classes."
        )
    if absent := [c for i, c in enumerate(classes) if i in in_validation and i not in in_train]:
        raise ValueError(
            f"Classes {absent} have validation tiles but none for training: the model could "
            "never predict them. Add training tiles or drop the classes from land_cover.classes."
        )
    if unused := [c for i, c in enumerate(classes) if i not in in_train]:
        logger.warning("Classes %s have no tiles at all: the model keeps an output it never learns.", unused)


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


def augment(images, seeds, augmentation: Mapping[str, float]):
    """Random dihedral transform (flips, 90-degree turns: aerial tiles have no 'up') and mild
    brightness/contrast/saturation jitter; stateless ops keyed by ``seeds`` keep runs repeatable."""
    import tensorflow as tf

    seed = lambda k: seeds + k  # noqa: E731 - distinct stream per op
    x = tf.image.convert_image_dtype(images, tf.float32)
    if augmentation.get("flip", True):
        x = tf.image.stateless_random_flip_left_right(x, seed(1))
    if augmentation.get("rotate90", True):
        turns = tf.random.stateless_uniform([], seed(2), 0, 4, dtype=tf.int32)
        x = tf.image.rot90(x, turns)
    if brightness := augmentation.get("brightness", 0.0):
        x = tf.image.stateless_random_brightness(x, brightness, seed(3))
    if contrast := augmentation.get("contrast", 0.0):
        x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, seed(4))
    if saturation := augmentation.get("saturation", 0.0):
        x = tf.image.stateless_random_saturation(x, 1 - saturation, 1 + saturation, seed(5))
    return tf.image.convert_image_dtype(tf.clip_by_value(x, 0.0, 1.0), tf.uint8, saturate=True)


def image_dataset(
    tile_files: FileIndex,
    tiles: pd.DataFrame,
    image_size: int,
    batch_size: int,
    seed: int,
    augmentation: Mapping[str, float] | None = None,
):
    """Batches of (uint8 images, labels) of ``tiles`` (``url``, ``label``), read from their files as
    the pipeline goes; shuffled and augmented (new draws every epoch) when ``augmentation`` is given, in
    table order otherwise."""
    import tensorflow as tf

    from landuse_kedro.tile_features import read_tiles

    urls = tiles["url"].tolist()

    def load(index):
        return read_tiles(tile_files, [urls[int(index)]], image_size)[0]

    def read(index, label):
        image = tf.numpy_function(load, [index], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (image_size, image_size, 3)), label

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(tiles)), tiles["label"].to_numpy(np.int32)))
    if augmentation is not None:
        dataset = dataset.shuffle(len(tiles), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augmentation is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, s: (augment(pair[0], s, augmentation), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
