"""Tiles as in-memory arrays and the seeded ``tf.data`` pipelines that feed them to Keras.

The sample set is a few thousand 224 x 224 tiles (about 150 kB each as uint8), so decoding once
into memory is cheaper than re-reading PNGs every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileArrays:
    """One split: uint8 RGB ``images`` (n, size, size, 3), class indices ``labels``, ``tile_ids``."""

    images: np.ndarray
    labels: np.ndarray
    tile_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def decode_split(
    partitions: Mapping[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    split: str,
    classes: list[str],
    image_size: int,
) -> TileArrays:
    """Decode the manifest's tiles of ``split``; the manifest (not the folder listing) decides
    which tiles belong, so a stray file never sneaks into training."""
    rows = manifest[manifest["split"] == split].sort_values("partition")
    unknown = sorted(set(rows["class_name"]) - set(classes))
    if unknown:
        raise ValueError(
            f"tile_manifest has classes {unknown} in split '{split}' that are not in "
            f"land_cover.classes {classes}."
        )
    missing = [key for key in rows["partition"] if key not in partitions]
    if missing:
        raise ValueError(
            f"{len(missing)} tiles of split '{split}' are in tile_manifest but not in "
            f"model_input_tiles, e.g. {missing[:3]}."
        )
    images = np.empty((len(rows), image_size, image_size, 3), dtype=np.uint8)
    for i, key in enumerate(rows["partition"]):
        image = partitions[key]().convert("RGB")
        if image.size != (image_size, image_size):
            raise ValueError(
                f"Tile '{key}' is {image.size[0]}x{image.size[1]}, expected {image_size}x{image_size}."
            )
        images[i] = np.asarray(image)
    index = {name: i for i, name in enumerate(classes)}
    labels = rows["class_name"].map(index).to_numpy(dtype=np.int32)
    return TileArrays(images, labels, tuple(rows["tile_id"].astype(str)))


def check_splits(train: TileArrays, validation: TileArrays, classes: list[str]) -> None:
    """Refuse sets that would train or score meaninglessly, naming what is wrong."""
    if len(train) == 0:
        raise ValueError("The training split is empty: data_preparation produced no training tiles.")
    in_train = set(train.labels.tolist())
    if len(in_train) < 2:
        raise ValueError(
            f"The training split has a single class {[classes[i] for i in in_train]}: "
            "a classifier needs at least two."
        )
    if len(validation) == 0:
        raise ValueError("The validation split is empty: nothing to stop early on or to evaluate.")
    in_validation = set(validation.labels.tolist())
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


def make_dataset(
    tiles: TileArrays, batch_size: int, seed: int, augmentation: Mapping[str, float] | None = None
):
    """Batches of (uint8 images, labels); shuffled and augmented (new draws every epoch) when
    ``augmentation`` is given, in file order otherwise."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((tiles.images, tiles.labels))
    if augmentation is not None:
        dataset = dataset.shuffle(len(tiles), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, s: (augment(pair[0], s, augmentation), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
