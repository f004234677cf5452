"""The backbone features of tile files on Spark (src/landuse_kedro/tile_features.py): each view's
features are the model's, the table rows name their tile and view, failures are rows, and the head's
epochs stream every tile once in one of its views, in a new seeded order each epoch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from landuse_kedro import tile_features
from landuse_kedro.datasets import ArrowTableDataset, FileIndexDataset
from tests.helpers import local_spark_session

SIZE = 16
SETTINGS = tile_features.WorkerSettings(image_size=SIZE, batch_size=3, threads=1)


@pytest.fixture(scope="module")
def spark():
    yield from local_spark_session()


def features_model():
    """A frozen one-conv model with an orientation-sensitive output, as a backbone is."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.Conv2D(5, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Conv2D(6, 3, strides=2)(x)
    return keras.Model(inputs, keras.layers.Flatten()(keras.layers.AveragePooling2D(3)(x)))


def write_tiles(root: Path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    (root / "train/Forest").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / f"train/Forest/t{i}.png")
    index = FileIndexDataset(path=str(root), filename_suffix=".png").load()
    return index, images


def test_dihedral_views_follow_the_augmentation_settings() -> None:
    assert tile_features.dihedral_views({"flip": True, "rotate90": True}) == tuple(range(8))
    assert tile_features.dihedral_views({"flip": False, "rotate90": True}) == (0, 1, 2, 3)
    assert tile_features.dihedral_views({"flip": True, "rotate90": False}) == (0, 4)
    assert tile_features.dihedral_views({"flip": False, "rotate90": False}) == (0,)


def test_the_eight_views_are_the_eight_symmetries_augmentation_draws_from() -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for image_index, image in enumerate(images):
        symmetries = [np.rot90(v, k) for v in (image, image[:, ::-1]) for k in range(4)]  # as augment draws
        views = [tile_features.dihedral(images, view)[image_index] for view in range(8)]
        np.testing.assert_array_equal(views[0], image)
        assert all(any(np.array_equal(v, s) for s in symmetries) for v in views)
        assert len({v.tobytes() for v in views}) == 8


def test_the_workers_features_are_the_models_in_each_view_and_bad_files_are_rows(spark, tmp_path) -> None:
    from landuse_kedro.models.onnx_export import keras_to_onnx

    model = features_model()
    index, images = write_tiles(tmp_path, 5)
    Image.new("RGB", (SIZE + 1, SIZE)).save(tmp_path / "train/Forest/wrong.png")  # a tile of the wrong size
    index = FileIndexDataset(path=str(tmp_path), filename_suffix=".png").load()
    hashes = tile_features.hash_files(index, list(index.urls))
    assert hashes["error"].isna().all()
    assert (
        hashes.set_index("url").loc[index.urls[0], "content_sha256"]
        == hashlib.sha256(Path(index.urls[0]).read_bytes()).hexdigest()
    )
    todo = hashes.assign(
        tile_id=[Path(u).stem for u in hashes["url"]],
        split="train",
        class_name="Forest",
        views=[[0, 3, 5] if Path(u).stem != "t4" else [0] for u in hashes["url"]],  # t4: a validation tile
    )
    extractor = tile_features.FeatureExtractor("k1", keras_to_onnx(model).payload)
    rows = tile_features.compute_features(index, todo, extractor, SETTINGS).toPandas()
    good = rows[rows["error"].isna()]
    assert sorted(good["view"].value_counts().to_dict().items()) == [(0, 5), (3, 4), (5, 4)]
    assert (rows["feature_model"] == "k1").all()
    for row in good.itertuples():
        image = images[int(row.tile_id[1:])]
        expected = model.predict(tile_features.dihedral(image[None], row.view), verbose=0)[0]
        got = np.frombuffer(row.features, tile_features.FEATURE_DTYPE).astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)  # float16 of ONNX Runtime's
    (bad,) = rows[rows["error"].notna()].itertuples()
    assert bad.tile_id == "wrong" and pd.isna(bad.view) and bad.features is None
    assert bad.error.endswith("wrong.png: wrong size 17x16, expected 16x16")


def test_a_file_changed_after_it_was_hashed_is_an_error_row_not_wrong_features(spark, tmp_path) -> None:
    from landuse_kedro.models.onnx_export import keras_to_onnx

    index, _ = write_tiles(tmp_path, 2)
    hashes = tile_features.hash_files(index, list(index.urls))
    Image.new("RGB", (SIZE, SIZE), (9, 9, 9)).save(index.urls[1])  # replaced between hashing and reading
    todo = hashes.assign(tile_id=["t0", "t1"], split="train", class_name="Forest", views=[[0], [0]])
    extractor = tile_features.FeatureExtractor("k1", keras_to_onnx(features_model()).payload)
    rows = tile_features.compute_features(index, todo, extractor, SETTINGS).toPandas().set_index("tile_id")
    assert pd.isna(rows.loc["t0", "error"]) and "file changed" in rows.loc["t1", "error"]


def fake_table(tmp_path: Path, n: int, views: tuple[int, ...], key: str = "k1"):
    """A feature table whose features say which tile and view they are: (tile, view) as float16, in
    two part files as two appends write them, read back through the catalog's Arrow dataset. Another
    model's row for the same content and an error row are there too, and must never be used."""
    rows = [
        (
            key,
            f"sha{t}",
            v,
            np.array([t, v], tile_features.FEATURE_DTYPE).tobytes(),
            f"t{t}",
            "train",
            "C",
            None,
        )
        for t in range(n)
        for v in views
    ]
    rows.append(("other", "sha0", 0, np.array([-1, -1], "<f2").tobytes(), "t0", "", "", None))
    rows.append((key, "sha0", None, None, "t0", "train", "C", "broken.png: cannot be decoded"))
    columns = [
        "feature_model",
        "content_sha256",
        "view",
        "features",
        "tile_id",
        "split",
        "class_name",
        "error",
    ]
    schema = pa.schema(
        [(c, pa.int32() if c == "view" else pa.binary() if c == "features" else pa.string()) for c in columns]
    )
    table = pa.Table.from_pylist([dict(zip(columns, row, strict=True)) for row in rows], schema)
    folder = tmp_path / "tile_features.parquet"
    folder.mkdir()
    half = len(rows) // 2  # as Spark writes them: every part file with the whole schema
    pq.write_table(table.slice(0, half), folder / "part-00000-a.snappy.parquet")
    pq.write_table(table.slice(half), folder / "part-00001-b.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    return ArrowTableDataset(filepath=str(folder)).load()


def test_an_epoch_streams_every_tile_once_in_one_of_its_views_with_new_draws_each_epoch(tmp_path) -> None:
    n, views = 12, (0, 1, 4, 5)
    table = fake_table(tmp_path, n, views)
    labels = (np.arange(n) % 3).astype(np.int32)
    shas = [f"sha{t}" for t in range(n)]

    def epochs(count: int, seed: int = 4):
        stream = tile_features.epoch_batches(table, "k1", shas, labels, views, batch_size=5, seed=seed)
        out = []
        for _ in range(count):
            batches = [next(stream) for _ in range(-(-n // 5))]  # steps per epoch, as Keras takes them
            assert [len(b[0]) for b in batches] == [5, 5, 2]
            out.append((np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])))
        stream.close()
        return out

    (first, first_labels), (second, second_labels) = epochs(2)
    for rows, row_labels in ((first, first_labels), (second, second_labels)):
        tiles = rows[:, 0].astype(int)
        assert sorted(tiles) == list(range(n))  # every tile once, never another model's rows
        assert set(rows[:, 1].astype(int)) <= set(views)
        np.testing.assert_array_equal(row_labels, labels[tiles])  # each tile with its own label
    assert not np.array_equal(first, second)  # a new order and new views every epoch
    assert len(set(first[:, 1]) | set(second[:, 1])) > 2  # views are drawn, not fixed
    np.testing.assert_array_equal(epochs(1)[0][0], first)  # seeded
    assert not np.array_equal(epochs(1, seed=5)[0][0], first)


def test_validation_features_come_in_the_order_asked_and_a_missing_tile_is_named(tmp_path) -> None:
    table = fake_table(tmp_path, 6, (0, 1))
    got = tile_features.collect_features(table, "k1", ["sha3", "sha0", "sha5", "sha3"])
    np.testing.assert_array_equal(got, [[3, 0], [0, 0], [5, 0], [3, 0]])  # a content twice: its row twice
    np.testing.assert_array_equal(tile_features.collect_features(table, "k1", ["sha2"], view=1), [[2, 1]])
    with pytest.raises(ValueError, match="no row for 1 tiles.*sha9 view 0"):
        tile_features.collect_features(table, "k1", ["sha1", "sha9"])


def test_a_row_written_twice_changes_no_label(tmp_path) -> None:
    """Two runs that appended the same contents leave doubled rows: matched by key, each tile still
    gets its own features and label (a stream of rows would have shifted every later batch)."""
    n, views = 7, (0, 1)
    table = fake_table(tmp_path, n, views)
    doubled = ArrowTableDataset(filepath=str(tmp_path / "tile_features.parquet"))
    part = next((tmp_path / "tile_features.parquet").glob("part-00000*"))
    (tmp_path / "tile_features.parquet" / "part-00002-c.snappy.parquet").write_bytes(part.read_bytes())
    assert doubled.load().count_rows() > table.count_rows()  # the doubled rows are there to be read
    labels = np.arange(n, dtype=np.int32) * 10
    stream = tile_features.epoch_batches(
        doubled.load(), "k1", [f"sha{t}" for t in range(n)], labels, views, 3, 0
    )
    rows, row_labels = (
        np.concatenate(parts) for parts in zip(*(next(stream) for _ in range(3)), strict=True)
    )
    stream.close()
    np.testing.assert_array_equal(row_labels, rows[:, 0].astype(int) * 10)
    assert sorted(rows[:, 0].astype(int)) == list(range(n))


def test_failed_tiles_names_errors_only_where_no_good_row_exists(tmp_path) -> None:
    table = fake_table(tmp_path, 3, (0,))
    assert tile_features.failed_tiles(table, "k1", ["sha1"]) == []
    assert tile_features.failed_tiles(table, "other", ["sha0"]) == []  # another model's rows are its own
    broken = table.to_table().to_pandas()
    broken = broken[~((broken["content_sha256"] == "sha0") & broken["error"].isna())]
    (tmp_path / "only_errors").mkdir()
    pq.write_table(
        pa.Table.from_pandas(broken, table.schema, preserve_index=False),
        tmp_path / "only_errors/part-0.parquet",
    )
    only_errors = ArrowTableDataset(filepath=str(tmp_path / "only_errors")).load()
    assert tile_features.failed_tiles(only_errors, "k1", ["sha0", "sha1"]) == [
        "broken.png: cannot be decoded"
    ]
