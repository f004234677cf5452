"""training pipeline: a short real run on a tiny tile set, the ONNX/Keras agreement, the int8 export
and its selection, the features computed on Spark and reused, the 3-class view, augmentation and the
bad-input errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from landuse_kedro import evaluation, tile_features
from landuse_kedro.classes import LandCover
from landuse_kedro.datasets import AppendedSparkDataset, ArrowTableDataset, FileIndexDataset
from landuse_kedro.pipelines.training.evaluation import chance_test, choose_precision
from landuse_kedro.pipelines.training.exports import export_scoring_model, quantize_scoring_model
from landuse_kedro.pipelines.training.features import extract_tile_features
from landuse_kedro.pipelines.training.fitting import train_classifier
from landuse_kedro.pipelines.training.inputs import assemble_tile_set, image_dataset
from tests.helpers import PROJECT_ROOT, load_catalog, local_spark_session, make_project_copy, run_pipeline

BASE_PARAMS = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters.yml").read_text())
LAND_COVER = BASE_PARAMS["land_cover"]
CLASSES = LAND_COVER["classes"]
SIZE = BASE_PARAMS["scoring"]["image_size"]
TRAINING = {"splits": {"train": "train", "validation": "validation"}}
SCORING = {"image_size": SIZE}
INT8 = {"calibration_tiles": 128, "max_accuracy_drop": 0.01}


def hue(class_index: int) -> np.ndarray:
    """The mean RGB colour of a class's tiles: far apart for the six classes."""
    return np.array([(37 * class_index) % 256, (91 * class_index + 40) % 256, (151 * class_index + 80) % 256])


def tile(class_index: int, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """A noisy tile whose mean colour says its class, so a model can learn it in an epoch or two."""
    pixels = hue(class_index) + rng.normal(0, 20, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def tiny_tile_set(per_class: dict[str, dict[str, int]], size: int = SIZE, seed: int = 0):
    """(partitions {key: loader}, manifest) shaped like data_preparation's outputs."""
    rng = np.random.default_rng(seed)
    partitions, rows = {}, []
    for split, counts in per_class.items():
        for name, count in counts.items():
            for i in range(count):
                tile_id = f"{split[:1]}{CLASSES.index(name)}_{i:03d}"
                key = f"{split}/{name}/{tile_id}"
                image = tile(CLASSES.index(name), rng, size)
                partitions[key] = image
                rows.append(
                    {
                        "tile_id": tile_id,
                        "split": split,
                        "region": "test",
                        "year": 2016,
                        "class_name": name,
                        "label_share": 1.0,
                        "row_off": 0,
                        "col_off": 0,
                        "width": size,
                        "height": size,
                        "minx": 0.0,
                        "miny": 0.0,
                        "maxx": 1.0,
                        "maxy": 1.0,
                        "crs": "EPSG:26910",
                        "partition": key,
                    }
                )
    return partitions, pd.DataFrame(rows)


def write_tiles(partitions: dict[str, Image.Image], root: Path):
    """The tiles as PNG files under ``root`` (``<split>/<Class>/<tile_id>.png``), listed as training does."""
    for key, image in partitions.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / f"{key}.png")
    return FileIndexDataset(path=str(root), filename_suffix=".png").load()


@pytest.fixture(scope="module")
def spark():
    yield from local_spark_session()


def every_class(n: int) -> dict[str, int]:
    return {name: n for name in CLASSES}


# One head epoch is 3 steps on the tiny set: at the base learning rate (0.001) whether the model
# gets past chance in the run's two epochs depends on the seed (8 seeded runs: accuracy 0.17 to
# 0.96, seed 2 stuck at chance); at 0.01, 18 seeded runs (training and tile seeds) all scored
# 0.83-1.0. So this run's head learns at 0.01, and the model must beat chance (1/6) clearly.
HEAD_LEARNING_RATE = {"training": {"learning_rate": 0.01}, "scoring": {"precision": "int8"}}
MIN_ACCURACY = 0.5  # 3x chance; the worst of the 18 runs was 0.83 (20 of 24 tiles)


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    """One short training run (test parameters: 1 head epoch + 1 fine-tuning epoch, head learning
    rate 0.01, int8 scoring asked for) on 6 classes x 4 tiles per split, written through the catalog
    like data_preparation does."""
    project = make_project_copy(tmp_path_factory.mktemp("training") / "project")
    tile_set = tiny_tile_set({"train": every_class(4), "validation": every_class(4)})
    train_on(project, tile_set, params=HEAD_LEARNING_RATE)
    return project


def read_json(project: Path, name: str) -> dict:
    return json.loads((project / "data" / "08_reporting" / name).read_text())


def test_training_run_reports_six_and_three_class_scores(trained_project: Path) -> None:
    metrics = read_json(trained_project, "training_metrics.json")
    six, three = metrics["six_class"], metrics["three_class"]
    assert metrics["classes"] == CLASSES
    assert six["confusion_matrix"]["labels"] == CLASSES
    assert three["confusion_matrix"]["labels"] == ["Developed", "Cultivated", "Undeveloped"]
    matrix6 = np.array(six["confusion_matrix"]["matrix"])
    matrix3 = np.array(three["confusion_matrix"]["matrix"])
    assert matrix6.sum(axis=1).tolist() == [4] * 6  # rows are the true classes
    assert matrix3.sum(axis=1).tolist() == [4, 4, 16]
    assert metrics["accuracy_6"] == pytest.approx(np.trace(matrix6) / matrix6.sum())
    assert metrics["accuracy_3"] == pytest.approx(np.trace(matrix3) / matrix3.sum())
    # the tiles' colours say their class: the model learned them, far above chance (1/6)
    assert metrics["accuracy_6"] >= MIN_ACCURACY
    # the 3-class matrix is the 6-class one with its rows and columns regrouped
    groups = LandCover.from_params(LAND_COVER).three_class_indices(np.arange(len(CLASSES)))
    regroup = np.eye(3, dtype=int)[groups]  # 6 x 3: class -> its group
    np.testing.assert_array_equal(matrix3, regroup.T @ matrix6 @ regroup)
    assert set(six["per_class"]) == set(CLASSES)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in six["per_class"].values())
    fp32, int8 = metrics["precisions"]["fp32"], metrics["precisions"]["int8"]
    assert fp32["format"] == int8["format"] == metrics["scoring_model"]["backend"] == "onnx"
    assert fp32["same_class_as_keras"] == 1.0
    assert fp32["accuracy_6"] == metrics["accuracy_6"]
    assert int8["bytes"] < fp32["bytes"] / 2  # int8 weights: a quarter of the bytes, plus scales
    assert metrics["int8_calibration_tiles"] == 24  # every training tile: fewer than 128
    # the int8 export scores unless it lost more than a point of fp32's accuracy (this run asks for int8)
    expected = "int8" if fp32["accuracy_6"] - int8["accuracy_6"] <= 0.01 else "fp32"
    assert metrics["scoring_model"]["requested_precision"] == "int8"
    assert metrics["scoring_model"]["precision"] == expected
    assert metrics["scoring_model"]["accuracy_6"] == metrics["precisions"][expected]["accuracy_6"]

    history = read_json(trained_project, "training_history.json")
    assert [e["phase"] for e in history["epochs"]] == ["head", "fine_tune"]
    assert history["head_input"] == "cached_features"
    assert history["feature_cache"] == {**history["feature_cache"], "views": 8, "features": 40 + 80 + 1280}
    assert history["kept_phase"] in {"head", "fine_tune"}
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history["epochs"][0])
    for png in ("training_confusion_matrix.png", "learning_curve.png"):
        with Image.open(trained_project / "data" / "08_reporting" / png) as image:
            assert image.format == "PNG" and image.width > 300


def test_onnx_export_and_keras_model_pick_the_same_class_for_every_validation_tile(
    trained_project: Path,
) -> None:
    import onnxruntime as ort

    cwd = Path.cwd()
    os.chdir(trained_project)
    try:
        catalog = load_catalog(trained_project)
        keras_model = catalog.load("landuse_classifier")
        artifacts = {
            name: catalog.load(name) for name in ("scoring_model_fp32", "scoring_model_int8", "scoring_model")
        }
        tiles = catalog.load("model_input_tiles")
    finally:
        os.chdir(cwd)
    keys = sorted(k for k in tiles if k.startswith("validation/"))
    images = np.stack([np.asarray(tiles[k]().convert("RGB")) for k in keys])
    fp32, int8, chosen = artifacts.values()
    assert fp32.format == int8.format == "onnx"
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    metrics = read_json(trained_project, "training_metrics.json")
    assert chosen.precision == metrics["scoring_model"]["precision"]  # what scoring will run
    assert chosen.payload == {"fp32": fp32, "int8": int8}[chosen.precision].payload

    def run(artifact):
        session = ort.InferenceSession(artifact.payload, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0]

    keras_probabilities = keras_model.predict(images, verbose=0)
    assert len(keys) == 24
    assert len(set(keras_probabilities.argmax(axis=1))) > 1  # else agreement would prove little
    np.testing.assert_array_equal(run(fp32).argmax(axis=1), keras_probabilities.argmax(axis=1))
    np.testing.assert_allclose(run(fp32), keras_probabilities, atol=1e-4)
    int8_probabilities = run(int8)
    np.testing.assert_allclose(int8_probabilities.sum(axis=1), 1.0, atol=1e-4)  # the softmax stays float
    agreement = np.mean(int8_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1))
    assert agreement == pytest.approx(metrics["precisions"]["int8"]["same_class_as_keras"])
    assert agreement >= 0.75


def test_keras_backend_exports_the_keras_file_and_unknown_backends_are_refused() -> None:
    import keras

    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    artifact = export_scoring_model(model, {"backend": "keras"})
    assert artifact.format == "keras"
    with pytest.raises(ValueError, match="scoring.backend is 'cntk'"):
        export_scoring_model(model, {"backend": "cntk"})


def test_three_class_view_groups_everything_but_developed_and_cultivated() -> None:
    land = LandCover.from_params(LAND_COVER)
    assert land.three_class_names == ("Developed", "Cultivated", "Undeveloped")
    grouped = land.three_class_indices(np.arange(len(CLASSES)))
    assert dict(zip(CLASSES, grouped.tolist())) == {
        "Developed": 0,
        "Cultivated": 1,
        "Forest": 2,
        "Shrub": 2,
        "Barren": 2,
        "Herbaceous": 2,
    }
    # Forest <-> Shrub confusions are errors in 6 classes and right answers in 3.
    truth = np.array([CLASSES.index(c) for c in ("Forest", "Shrub", "Developed", "Cultivated")])
    predicted = np.array([CLASSES.index(c) for c in ("Shrub", "Forest", "Developed", "Developed")])
    scores = evaluation.six_and_three_class_scores(truth, predicted, land)
    six, three = scores["six_class"], scores["three_class"]
    assert six == evaluation.classification_scores(truth, predicted, CLASSES)
    assert three["confusion_matrix"]["labels"] == ["Developed", "Cultivated", "Undeveloped"]
    assert six["accuracy"] == 0.25
    assert three["accuracy"] == 0.75
    assert three["per_class"]["Cultivated"]["recall"] == 0.0
    assert three["per_class"]["Developed"]["precision"] == 0.5


def test_augmentation_only_turns_and_flips_without_jitter_and_repeats_with_the_seed(tmp_path) -> None:
    """Images are read from their files as the pipeline goes, then augmented."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    tile_labels = np.arange(16, dtype=np.int32) % 2
    index = write_tiles(
        {f"train/C{i % 2}/t{i:02d}": Image.fromarray(im) for i, im in enumerate(images)}, tmp_path
    )
    urls = {Path(url).stem: url for url in index.urls}
    tiles = pd.DataFrame({"url": [urls[f"t{i:02d}"] for i in range(16)], "label": tile_labels})

    def make_dataset(tiles, batch_size, seed, augmentation=None):
        return image_dataset(index, tiles, 8, batch_size, seed, augmentation)

    geometry_only = {"flip": True, "rotate90": True}

    def epoch(dataset):
        batches = list(dataset.as_numpy_iterator())
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    dataset = make_dataset(tiles, batch_size=4, seed=7, augmentation=geometry_only)
    first, labels = epoch(dataset)
    second, _ = epoch(dataset)
    assert first.dtype == np.uint8 and first.shape == images.shape
    changed = 0
    for out, label in zip(first, labels):
        # the output is one of the 8 symmetries of some input tile with the same label
        candidates = [
            np.rot90(v, k)
            for img in images[tile_labels == label]
            for v in (img, img[:, ::-1])
            for k in range(4)
        ]
        assert any(np.array_equal(out, c) for c in candidates)
        changed += not any(np.array_equal(out, img) for img in images)
    assert changed > 0  # augmentation did something
    assert not np.array_equal(first, second)  # new draws every epoch
    again, _ = epoch(make_dataset(tiles, batch_size=4, seed=7, augmentation=geometry_only))
    np.testing.assert_array_equal(first, again)  # same seed, same run

    jitter = {"flip": False, "rotate90": False, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1}
    jittered, jittered_labels = epoch(make_dataset(tiles, 4, 7, jitter))
    assert jittered.dtype == np.uint8 and jittered.shape == images.shape
    # shuffled: find each output's input tile (the nearest; random tiles are far apart)
    distance = np.abs(jittered[:, None].astype(int) - images[None].astype(int)).mean(axis=(2, 3, 4))
    source = distance.argmin(axis=1)
    assert sorted(source) == list(range(16))
    np.testing.assert_array_equal(jittered_labels, tile_labels[source])
    change = jittered.astype(int) - images[source].astype(int)
    assert ((change != 0).mean(axis=(1, 2, 3)) > 0.5).all()  # every tile's colours were jittered
    # ... and stayed in range: each of the three ops moves a pixel by at most 0.1 of the range, and
    # values past 0 or 255 are clipped there, not wrapped around
    assert np.abs(change).max() <= 3 * 0.1 * 255
    assert (jittered == 255).sum() > (images == 255).sum() and (jittered == 0).sum() > (images == 0).sum()
    plain, plain_labels = epoch(make_dataset(tiles, batch_size=4, seed=7))
    np.testing.assert_array_equal(plain, images)  # evaluation input: untouched, in order
    np.testing.assert_array_equal(plain_labels, tile_labels)


SMALL = 32  # bad-input checks need no real tile size
SMALL_SCORING = {"image_size": SMALL, "batch_size": 16, "threads_per_worker": 1}


def small_files(per_class, tmp_path: Path, seed: int = 0):
    """(tile files, manifest) of a tiny set of SMALL tiles written under ``tmp_path``."""
    partitions, manifest = tiny_tile_set(per_class, size=SMALL, seed=seed)
    return write_tiles(partitions, tmp_path / "tiles"), manifest


def assemble_small(per_class, tmp_path: Path):
    index, manifest = small_files(per_class, tmp_path)
    return assemble_tile_set(index, manifest, LAND_COVER, TRAINING, SMALL_SCORING)


def test_tile_set_lists_the_manifests_tiles_in_partition_order_without_reading_them(tmp_path) -> None:
    """One row per manifest tile of the two splits, in partition order (split/class/tile: class folder by
    class folder), with its file and its label: the manifest's class of that very tile."""
    index, manifest = small_files({"train": every_class(2), "validation": every_class(1)}, tmp_path)
    tile_set = assemble_tile_set(index, manifest, LAND_COVER, TRAINING, SMALL_SCORING)
    assert tile_set["role"].value_counts().to_dict() == {"train": 12, "validation": 6}
    for role, tiles in tile_set.groupby("role", sort=False):
        rows = manifest[manifest.split == role].sort_values("partition")
        assert tiles["tile_id"].tolist() == rows["tile_id"].tolist()
        assert tiles["url"].tolist() == [str(tmp_path / "tiles" / f"{key}.png") for key in rows["partition"]]
        assert [CLASSES[label] for label in tiles["label"]] == rows["class_name"].tolist()


def test_empty_training_split_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="training split is empty"):
        assemble_small({"validation": every_class(1)}, tmp_path)


def test_single_class_training_split_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"single class \['Forest'\]"):
        assemble_small({"train": {"Forest": 3}, "validation": every_class(1)}, tmp_path)


def test_class_missing_from_validation_is_named(tmp_path) -> None:
    validation = {name: 1 for name in CLASSES if name != "Barren"}
    with pytest.raises(ValueError, match=r"Classes \['Barren'\] have training tiles but none in validation"):
        assemble_small({"train": every_class(2), "validation": validation}, tmp_path)


def test_class_missing_from_training_is_named(tmp_path) -> None:
    train = {name: 2 for name in CLASSES if name != "Shrub"}
    with pytest.raises(ValueError, match=r"Classes \['Shrub'\] have validation tiles but none for training"):
        assemble_small({"train": train, "validation": every_class(1)}, tmp_path)


def test_class_without_any_tile_is_only_a_warning(tmp_path, caplog) -> None:
    present = {name: 2 for name in CLASSES if name != "Barren"}
    tile_set = assemble_small({"train": present, "validation": present}, tmp_path)
    assert CLASSES.index("Barren") not in tile_set["label"].tolist()
    assert "['Barren'] have no tiles at all" in caplog.text


def test_manifest_tile_without_a_file_is_named(tmp_path) -> None:
    index, manifest = small_files({"train": every_class(1), "validation": every_class(1)}, tmp_path)
    (tmp_path / "tiles/train/Shrub/t3_000.png").unlink()
    index = FileIndexDataset(path=str(tmp_path / "tiles"), filename_suffix=".png").load()
    with pytest.raises(ValueError, match="train/Shrub/t3_000"):
        assemble_tile_set(index, manifest, LAND_COVER, TRAINING, SMALL_SCORING)


def test_class_outside_land_cover_classes_is_named(tmp_path) -> None:
    index, manifest = small_files({"train": every_class(1), "validation": every_class(1)}, tmp_path)
    manifest.loc[0, "class_name"] = "Water"
    with pytest.raises(ValueError, match=r"classes \['Water'\]"):
        assemble_tile_set(index, manifest, LAND_COVER, TRAINING, SMALL_SCORING)


def train_small(
    tmp_path: Path, per_class, params: dict, table: Path | None = None, index=None, manifest=None
):
    """The training nodes up to the model, as the pipeline chains them: list, extract features on Spark
    (saved to the feature table at ``table``), train. Returns (model, history, keys, index)."""
    if index is None:
        index, manifest = small_files(per_class, tmp_path)
    tile_set = assemble_tile_set(index, manifest, LAND_COVER, params, SMALL_SCORING)
    table = str(table or tmp_path / "features.parquet")
    features = AppendedSparkDataset(filepath=table, optional=True)  # tile_features@spark
    new, keys = extract_tile_features(tile_set, index, features.load(), LAND_COVER, params, SMALL_SCORING)
    features.save(new)
    arrow = ArrowTableDataset(filepath=table).load()  # tile_features@arrow: the same files
    model, history = train_classifier(keys, arrow, index, LAND_COVER, params, SMALL_SCORING)
    return model, history, keys, index


def tiny_classifier(backbone, weights, num_classes, image_size, dropout, mid_level_features=False):
    """A frozen one-conv 'backbone' (orientation-sensitive, like a real one) and a two-layer head,
    with build_classifier's layer names, so phase logic runs in a second (one feature map: no mid-level
    features)."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="backbone", trainable=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(conv(keras.layers.Rescaling(1 / 255)(inputs)))
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x))


@pytest.fixture
def tiny_backbone(monkeypatch):
    """:func:`tiny_classifier` in place of the real one."""
    from landuse_kedro import models

    build = tiny_classifier

    monkeypatch.setattr(models, "build_classifier", build)
    monkeypatch.setattr(models, "unfreeze_top", lambda model, blocks: [])


def phase_params(**overrides) -> dict:
    # "imagenet" so the fine-tune phase runs (weights: none trains from scratch, no second phase);
    # the stand-in builder ignores it.
    params = {
        **TRAINING,
        "backbone": "tiny",
        "weights": "imagenet",
        "dropout": 0.0,
        "batch_size": 8,
        "seed": 3,
        "epochs": 3,
        "learning_rate": 0.01,
        "fine_tune_epochs": 3,
        "fine_tune_blocks": 1,
        "fine_tune_learning_rate": 0.01,
        "patience": 2,
        "augmentation": {"flip": True},
    }
    return {**params, **overrides}


@pytest.mark.parametrize("cache_features", [True, False])
@pytest.mark.parametrize(("fine_tune_learning_rate", "kept"), [(0.01, "fine_tune"), (1000.0, "head")])
def test_fine_tuning_is_kept_only_when_it_lowers_the_validation_loss(
    spark, tiny_backbone, tmp_path, fine_tune_learning_rate: float, kept: str, cache_features: bool
) -> None:
    params = phase_params(fine_tune_learning_rate=fine_tune_learning_rate, cache_features=cache_features)
    model, history, keys, index = train_small(
        tmp_path, {"train": every_class(4), "validation": every_class(2)}, params
    )
    assert [e["phase"] for e in history["epochs"]][:3] == ["head"] * 3
    assert history["head_input"] == ("cached_features" if cache_features else "images")
    assert history["kept_phase"] == kept
    best_of = {
        phase: min(e["val_loss"] for e in history["epochs"] if e["phase"] == phase)
        for phase in ("head", "fine_tune")
    }
    assert history["best_val_loss"] == min(best_of.values()) == best_of[kept]
    validation = keys[keys["role"] == "validation"]
    images = tile_features.read_tiles(index, validation["url"].tolist(), SMALL)
    loss = model.evaluate(images, validation["label"].to_numpy(), batch_size=8, verbose=0, return_dict=True)[
        "loss"
    ]
    # the returned weights are the kept ones (the head saw float16 features: a little rounding)
    tolerance = 2e-3 if cache_features and kept == "head" else 1e-4
    assert loss == pytest.approx(history["best_val_loss"], rel=tolerance)


def test_training_from_scratch_trains_on_images_without_features(spark, tiny_backbone, tmp_path) -> None:
    _, history, keys, _ = train_small(
        tmp_path,
        {"train": every_class(2), "validation": every_class(1)},
        phase_params(weights="none", epochs=1),
    )
    assert history["head_input"] == "images" and history["feature_cache"] is None
    assert keys["content_sha256"].isna().all()
    assert {e["phase"] for e in history["epochs"]} == {"head"}  # nothing frozen, nothing to fine-tune


# --- features computed on Spark, kept and reused ----------------------------------------------------


def test_a_second_run_computes_only_the_features_it_lacks(spark, tiny_backbone, tmp_path) -> None:
    """Features are keyed by the tile's bytes and the features model: a run with another head setting
    computes nothing; tiles added (or renamed copies of known ones) cost only what is new."""
    table = tmp_path / "features.parquet"
    params = phase_params(fine_tune_epochs=0, epochs=1)
    per_class = {"train": every_class(2), "validation": every_class(1)}
    _, first, keys, index = train_small(tmp_path / "a", per_class, params, table)
    assert first["feature_cache"]["computed_tiles"] == 18 and first["feature_cache"]["reused_tiles"] == 0
    rows = spark.read.parquet(str(table))
    assert rows.count() == 12 * 8 + 6  # training tiles in 8 views, validation tiles as they are
    _, second, _, _ = train_small(
        tmp_path / "a",
        per_class,
        {**params, "learning_rate": 0.02},
        table,
        *small_files(per_class, tmp_path / "a"),
    )
    assert second["feature_cache"]["computed_tiles"] == 0 and second["feature_cache"]["reused_tiles"] == 18
    assert spark.read.parquet(str(table)).count() == 12 * 8 + 6  # nothing appended
    # another set under other names: its first Developed tiles have the same bytes (same draws), the rest
    # are new; only the new ones are computed
    more = {"train": every_class(3), "validation": every_class(1)}
    _, third, keys, _ = train_small(tmp_path / "b", more, params, table)
    fresh = keys.loc[keys["computed"]]
    assert third["feature_cache"]["computed_tiles"] == len(fresh) > 0
    assert third["feature_cache"]["reused_tiles"] >= 2
    rows = spark.read.parquet(str(table)).select("content_sha256", "view").toPandas()
    assert not rows.duplicated().any()  # nothing computed twice
    needed = {
        (sha, view)
        for sha, role in zip(keys["content_sha256"], keys["role"], strict=True)
        for view in (range(8) if role == "train" else [0])
    }
    assert needed <= set(rows.itertuples(index=False, name=None))  # and nothing this run needs missing


def test_a_tile_the_workers_cannot_decode_fails_training_naming_it(spark, tiny_backbone, tmp_path) -> None:
    index, manifest = small_files({"train": every_class(2), "validation": every_class(1)}, tmp_path)
    bad = tmp_path / "tiles/train/Forest/t2_001.png"
    Image.new("RGB", (16, 16)).save(bad)
    with pytest.raises(ValueError, match=r"t2_001.png: wrong size 16x16, expected 32x32"):
        train_small(tmp_path, None, phase_params(), index=index, manifest=manifest)


# --- the int8 export and which precision scores ---------------------------------------------------


def test_int8_calibration_sees_a_seeded_sample_of_training_tiles_only(monkeypatch, tmp_path) -> None:
    from types import SimpleNamespace

    from landuse_kedro.models import onnx_export, quantize

    seen: list[np.ndarray] = []
    monkeypatch.setattr(quantize, "quantize_onnx", lambda model, images: seen.append(images) or model)
    monkeypatch.setattr(onnx_export, "artifact_to_onnx", lambda model: model)
    index, manifest = small_files({"train": every_class(4), "validation": every_class(4)}, tmp_path)
    tile_set = assemble_tile_set(index, manifest, LAND_COVER, TRAINING, SMALL_SCORING)
    train, validation = (
        tile_features.read_tiles(index, tile_set.loc[tile_set["role"] == role, "url"].tolist(), SMALL)
        for role in ("train", "validation")
    )
    model = SimpleNamespace(format="onnx", payload=b"fp32 model")

    def calibrate(seed: int, tiles: int) -> np.ndarray:
        quantize_scoring_model(
            model,
            tile_set,
            index,
            {"seed": seed, "int8": {**INT8, "calibration_tiles": tiles}},
            SMALL_SCORING,
        )
        return seen[-1]

    sample = calibrate(3, 10)
    assert len(sample) == 10
    for image in sample:
        assert any(np.array_equal(image, t) for t in train)
        assert not any(np.array_equal(image, v) for v in validation)
    assert len({image.tobytes() for image in sample}) == 10  # no tile twice
    np.testing.assert_array_equal(calibrate(3, 10), sample)  # seeded
    assert not np.array_equal(calibrate(4, 10), sample)
    np.testing.assert_array_equal(calibrate(3, 500), train)  # fewer tiles than asked: all of them


@pytest.mark.parametrize(
    ("requested", "backend", "int8_accuracy", "chosen"),
    [
        ("int8", "onnx", 0.905, "int8"),  # 0.5 points below fp32: within the 1-point allowance
        ("int8", "onnx", 0.90, "int8"),  # exactly 1 point below
        ("int8", "onnx", 0.89, "fp32"),  # 2 points below: int8 is set aside
        ("int8", "onnx", 0.95, "int8"),
        ("int8", "keras", 0.95, "fp32"),  # int8 is an ONNX model
        ("fp32", "onnx", 0.95, "fp32"),
    ],
)
def test_int8_scores_only_within_the_allowed_accuracy_drop(
    requested, backend, int8_accuracy, chosen, caplog
) -> None:
    assert choose_precision(requested, backend, {"fp32": 0.91, "int8": int8_accuracy}, 0.01) == chosen
    assert ("scoring uses fp32" in caplog.text) == (requested == "int8" and chosen == "fp32")


def test_an_unknown_precision_is_refused_before_training(tmp_path) -> None:
    index, manifest = small_files({"train": every_class(1), "validation": every_class(1)}, tmp_path)
    with pytest.raises(ValueError, match=r"scoring.precision is 'int4'"):
        assemble_tile_set(index, manifest, LAND_COVER, TRAINING, {**SMALL_SCORING, "precision": "int4"})


# ------------------------------------------------------------ a model no better than guessing (issue 32)


def shuffled_tile_set(seed: int = 7):
    """The tiny set with its tiles dealt out at random over the labels: no tile's colour says its class."""
    partitions, manifest = tiny_tile_set({"train": every_class(4), "validation": every_class(4)})
    keys = list(partitions)
    images = [partitions[key] for key in np.random.default_rng(seed).permutation(keys)]
    return dict(zip(keys, images, strict=True)), manifest


def train_on(project: Path, tile_set, params: dict | None = None) -> None:
    """``tile_set`` written through the catalog as data_preparation does, then one training run
    (with the project's promotion rule unless ``params`` say otherwise)."""
    partitions, manifest = tile_set
    cwd = Path.cwd()
    os.chdir(project)
    try:
        catalog = load_catalog(project)
        catalog.save("model_input_tiles", partitions)
        catalog.save("tile_manifest", manifest)
    finally:
        os.chdir(cwd)
    run_pipeline(project, "training", params=DEFAULT_PROMOTION if params is None else params)


DEFAULT_PROMOTION = {**HEAD_LEARNING_RATE, "training": {"learning_rate": 0.01, "promote_chance_model": False}}
"""The project's rule (the test environment promotes any model: its tiny chain cannot beat chance)."""


def scoring_model_versions(project: Path) -> list[bytes]:
    folder = project / "data" / "06_models" / "scoring_model.onnx"
    return [path.read_bytes() for path in sorted(folder.glob("*/scoring_model.onnx"))]


def test_the_learned_model_is_above_chance_and_promoted(trained_project: Path) -> None:
    metrics = read_json(trained_project, "training_metrics.json")
    test = metrics["chance_test"]
    assert (test["tiles"], test["chance"]) == (24, pytest.approx(1 / 6))
    assert test["above_chance"] and test["p_value"] < test["max_p_value"] == 0.01
    assert metrics["scoring_model"]["promoted"] is True
    assert metrics["train_tiles_per_class"]["below_minimum"] == every_class(4)  # 4 < 24: warned
    assert len(scoring_model_versions(trained_project)) == 1


def test_a_model_no_better_than_chance_stops_the_run_when_there_is_no_earlier_model(
    tmp_path: Path, caplog
) -> None:
    project = make_project_copy(tmp_path / "project")
    with pytest.raises(
        ValueError, match=r"not clearly better than guessing.*no earlier scoring_model"
    ) as error:
        train_on(project, shuffled_tile_set())
    assert "more regions" in str(error.value) and "data_preparation.min_label_share" in str(error.value)
    metrics = read_json(project, "training_metrics.json")  # the evaluation was recorded
    test = metrics["chance_test"]
    assert test["p_value"] >= 0.01 and test["above_chance"] is False
    assert metrics["scoring_model"]["promoted"] is False
    assert "not clearly better than guessing" in caplog.text and f"p = {test['p_value']:.3g}" in caplog.text
    assert scoring_model_versions(project) == []
    # the user's explicit choice promotes it anyway (still warned)
    caplog.clear()
    run_pipeline(
        project,
        "training",
        params={**DEFAULT_PROMOTION, "training": {"learning_rate": 0.01, "promote_chance_model": True}},
    )
    metrics = read_json(project, "training_metrics.json")
    assert metrics["chance_test"]["above_chance"] is False and metrics["scoring_model"]["promoted"] is True
    assert "not clearly better than guessing" in caplog.text
    assert len(scoring_model_versions(project)) == 1


def test_a_model_no_better_than_chance_leaves_scoring_on_the_previous_model(
    trained_project: Path, tmp_path: Path, caplog
) -> None:
    project = tmp_path / "project"
    shutil.copytree(trained_project, project)
    (previous,) = scoring_model_versions(project)
    train_on(project, shuffled_tile_set())
    metrics = read_json(project, "training_metrics.json")
    assert metrics["chance_test"]["above_chance"] is False and metrics["scoring_model"]["promoted"] is False
    assert "Scoring keeps the previous scoring_model" in caplog.text
    assert scoring_model_versions(project) == [previous, previous]  # saved again as this run's version
    # while the run's own exports were saved, and differ from what scoring runs
    assert read_json(project, "training_metrics.json")["scoring_model"]["bytes"] > 0
    fp32 = sorted((project / "data/06_models/scoring_model_fp32.onnx").glob("*/*.onnx"))
    assert len(fp32) == 2 and fp32[-1].read_bytes() != previous


def test_the_chance_test_is_a_one_sided_binomial_test_against_the_largest_class() -> None:
    labels = np.repeat(np.arange(6), 4)
    test = chance_test(4 / 24, labels, 6, 0.01)  # as many right as guessing gets
    assert test["above_chance"] is False and test["p_value"] == pytest.approx(0.5845, abs=1e-4)
    assert chance_test(9 / 24, labels, 6, 0.01)["above_chance"] is False  # p = 0.0118
    assert chance_test(10 / 24, labels, 6, 0.01)["above_chance"] is True  # p = 0.0033
    unbalanced = np.array([0] * 12 + [1] * 4 + [2] * 4 + [3] * 4)  # always "0" is right half the time
    assert chance_test(12 / 24, unbalanced, 6, 0.01)["chance"] == 0.5
