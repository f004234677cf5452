"""The scorer: decoding and its failures, both backends, labels from folders, one row per file."""

from __future__ import annotations

import io
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndexDataset
from landuse_kedro.models.predictor import cached_predictor, load_predictor
from landuse_kedro.scoring import ImageError, ScoringSettings, decode_image, score_images
from landuse_kedro.spark import active_spark_session, task_count
from tests.helpers import LAND_COVER, local_spark_session

CLASSES = LAND_COVER["classes"]
SIZE = 32
SCORING = {"backend": "onnx", "batch_size": 4, "threads_per_worker": 1, "image_size": SIZE}


def tiny_model(size: int = SIZE):
    """A small random CNN with the project's model contract: uint8 RGB in, 6 probabilities out."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        len(CLASSES), activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)
    )(x)
    return keras.Model(inputs, outputs)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def random_tile(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3)
    noise = rng.integers(-40, 40, (size, size, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


BAD_FILES = {  # file name -> what its error must mention
    "empty.png": "empty file",
    "corrupt.png": "undecodable",
    "truncated.png": "cannot decode",
    "wrong_size.png": "wrong size 20x16",
    "bomb.png": "decompression bomb",
    "gray.png": "unsupported image mode L",
    "gray16.png": "unsupported image mode I",
    "transparent.png": "transparent pixels (mode RGBA)",
    "eps.png": "not PNG or JPEG",
    "tiff.png": "not PNG or JPEG",
}


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB and holds no pixel data: a few dozen
    bytes that a decoder without a size check would try to inflate into width * height * 3."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def odd_files(size: int = SIZE) -> dict[str, bytes]:
    """The damaged and odd files of BAD_FILES beyond the first four, by name."""
    rgba = np.dstack([random_tile(5, size), np.full((size, size), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto showpage\n%%EOF\n"
    return {
        "bomb.png": header_only_png(20_000, 20_000),
        "gray.png": encoded(Image.fromarray(random_tile(1, size)[..., 0]), "PNG"),
        "gray16.png": encoded(Image.fromarray(random_tile(2, size)[..., 0].astype(np.uint16) * 257), "PNG"),
        "transparent.png": encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
        "eps.png": eps,
        "tiff.png": encoded(Image.fromarray(random_tile(3, size)), "TIFF"),
    }


def write_tiles(folder: Path, per_class: int = 5, size: int = SIZE) -> dict[str, int]:
    """Labelled tiles under ``<Class>/`` (one with an upper-case suffix), one unlabelled folder and
    one broken or odd file of each kind. Returns how many files of each kind were written."""
    for index, name in enumerate(CLASSES[:3]):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / name / f"{name}_{i}.png").write_bytes(png_bytes(random_tile(index * 100 + i, size)))
    (folder / "Developed" / "UPPER.PNG").write_bytes(png_bytes(random_tile(77, size)))
    (folder / "unsorted").mkdir(parents=True, exist_ok=True)
    (folder / "unsorted" / "loose.png").write_bytes(png_bytes(random_tile(999, size)))
    good = png_bytes(random_tile(1000, size))
    bad = folder / "Forest"
    (bad / "empty.png").write_bytes(b"")
    (bad / "corrupt.png").write_bytes(b"\x89PNG not really" + bytes(range(256)))
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    (bad / "wrong_size.png").write_bytes(png_bytes(np.zeros((16, 20, 3), np.uint8)))
    for name, data in odd_files(size).items():
        (bad / name).write_bytes(data)
    return {"labelled": 3 * per_class + 1, "unlabelled": 1, "bad": len(BAD_FILES)}


def image_files(folder: Path) -> list[str]:
    """What the project's listing counts: .png/.jpg/.jpeg in any case."""
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


@pytest.fixture(scope="module")
def keras_model():
    return tiny_model()


@pytest.fixture(scope="module")
def artifacts(keras_model):
    from landuse_kedro.models.onnx_export import keras_to_artifact, keras_to_onnx

    return {"onnx": keras_to_onnx(keras_model), "keras": keras_to_artifact(keras_model)}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("validation")
    return folder, write_tiles(folder)


@pytest.fixture(scope="module")
def spark():
    yield from local_spark_session()


# --- decoding ---------------------------------------------------------------------------------


def test_decode_returns_uint8_rgb_of_the_expected_size():
    tile = random_tile(1)
    decoded = decode_image(png_bytes(tile), SIZE)
    assert decoded.dtype == np.uint8 and decoded.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(decoded, tile)


def test_decode_converts_rgba_and_reads_jpeg():
    rgba = np.dstack([random_tile(2), np.full((SIZE, SIZE), 255, np.uint8)])
    assert decode_image(png_bytes(rgba), SIZE).shape == (SIZE, SIZE, 3)
    buffer = io.BytesIO()
    Image.fromarray(random_tile(3)).save(buffer, format="JPEG")
    assert decode_image(buffer.getvalue(), SIZE).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_decode_names_the_problem(tmp_path, name):
    write_tiles(tmp_path, per_class=1)
    with pytest.raises(ImageError, match=re.escape(BAD_FILES[name])):
        decode_image((tmp_path / "Forest" / name).read_bytes(), SIZE)


def test_palette_and_opaque_rgba_are_scored_as_their_rgb():
    tile = random_tile(11)
    palette = Image.fromarray(tile).quantize(16)
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(decode_image(encoded(palette, "PNG"), SIZE), expected)
    opaque = np.dstack([tile, np.full((SIZE, SIZE), 255, np.uint8)])
    np.testing.assert_array_equal(decode_image(encoded(Image.fromarray(opaque, "RGBA"), "PNG"), SIZE), tile)
    jpeg = decode_image(encoded(Image.fromarray(tile), "JPEG"), SIZE)
    assert jpeg.shape == (SIZE, SIZE, 3) and np.abs(jpeg.astype(int) - tile).mean() < 20


def test_a_palette_with_transparency_is_refused_by_name():
    palette = Image.fromarray(random_tile(12)).quantize(16)
    palette.info["transparency"] = 0
    with pytest.raises(ImageError, match="mode P with transparency"):
        decode_image(encoded(palette, "PNG"), SIZE)


def test_the_upper_case_suffix_is_listed(tmp_path):
    write_tiles(tmp_path, per_class=1)
    listed = FileIndexDataset(path=str(tmp_path), filename_suffix=[".png", ".jpg"]).load().urls
    assert any(url.endswith("UPPER.PNG") for url in listed)
    assert sorted(listed) == image_files(tmp_path)


# --- backends ---------------------------------------------------------------------------------


def test_onnx_export_and_keras_give_the_same_classes(artifacts, keras_model):
    batch = np.stack([random_tile(seed) for seed in range(24)])
    expected = np.asarray(keras_model.predict_on_batch(batch))
    for backend, artifact in artifacts.items():
        assert artifact.format == backend
        probabilities = load_predictor(artifact.format, artifact.payload, threads=1)(batch)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probabilities, expected, atol=1e-4)
        assert (probabilities.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert len(set(expected.argmax(axis=1))) > 1, "the test model should not predict one class only"


def test_scoring_says_the_precision_it_runs_and_warns_only_when_fp32_was_asked_for_and_int8_runs(
    artifacts, caplog
):
    from landuse_kedro.models.quantize import quantize_onnx
    from landuse_kedro.scoring import log_precision

    def records(model, requested: str) -> list[tuple[str, str]]:
        caplog.clear()
        with caplog.at_level("INFO", logger="landuse_kedro.scoring"):
            assert log_precision(model, {**SCORING, "precision": requested}) == model.precision
        return [(r.levelname, r.getMessage()) for r in caplog.records]

    fp32 = artifacts["onnx"]
    assert records(fp32, "fp32") == [("INFO", "Scoring with the fp32 onnx model")]
    # int8 asked for, fp32 runs (training set int8 aside, or a model from elsewhere): said, no warning
    said = records(fp32, "int8")
    assert [level for level, _ in said] == ["INFO", "INFO"]
    assert "scoring.precision is int8 but scoring_model is fp32" in said[0][1]
    # fp32 asked for, int8 runs: less than was asked for, a warning
    int8 = quantize_onnx(fp32, np.stack([random_tile(i) for i in range(4)]))
    warned = records(int8, "fp32")
    assert warned[0][0] == "WARNING" and "scoring.precision is fp32 but scoring_model is int8" in warned[0][1]


def test_predicting_in_batches_gives_the_whole_set_s_classes(artifacts):
    from landuse_kedro.models.predictor import predict_classes

    predict = load_predictor("onnx", artifacts["onnx"].payload, threads=1)
    images = np.stack([random_tile(i) for i in range(5)])
    batches: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        batches.append(len(batch))
        return predict(batch)

    classes = predict_classes(counted, images, batch_size=2)
    assert batches == [2, 2, 1]
    np.testing.assert_array_equal(classes, predict(images).argmax(axis=1))


def test_a_worker_loads_a_model_once(artifacts):
    fetched = []

    def payload() -> bytes:
        fetched.append(1)
        return artifacts["onnx"].payload

    first = cached_predictor("model-a", "onnx", payload, threads=1)
    assert cached_predictor("model-a", "onnx", payload, threads=1) is first
    assert len(fetched) == 1
    cached_predictor("model-b", "onnx", payload, threads=1)
    assert len(fetched) == 2


def test_settings_carry_the_land_cover_and_pickle_small():
    settings = ScoringSettings.from_params(LAND_COVER, {**SCORING, "prefetch": False})
    assert settings.classes == tuple(CLASSES)
    assert [settings.land_cover.to_three_class(c) for c in CLASSES] == [
        "Developed",
        "Cultivated",
        "Undeveloped",
        "Undeveloped",
        "Undeveloped",
        "Undeveloped",
    ]
    assert settings.land_cover.to_three_class(None) is None  # a failed file has no 3-class label
    shipped = pickle.dumps(settings)  # what every Spark task receives
    assert pickle.loads(shipped) == settings and len(shipped) < 1000


# --- on Spark ---------------------------------------------------------------------------------


def test_partitions_follow_cores_and_bound_task_size():
    assert task_count(5, cores=2, per_core=2, max_per_task=16) == 4
    assert task_count(1, cores=8, per_core=2, max_per_task=16) == 1  # never an empty task
    assert task_count(184, cores=2, per_core=2, max_per_task=16) == 12  # <= 16 batches a task


def _score(spark, images, artifact, **scoring):
    frame = score_images(images, artifact, LAND_COVER, {**SCORING, **scoring}).toPandas()
    return frame.sort_values("path").reset_index(drop=True)


@pytest.mark.spark
def test_every_file_becomes_one_row_with_labels_and_reasons(spark, tiles, artifacts):
    folder, counts = tiles
    index = FileIndexDataset(path=str(folder), filename_suffix=".png").load()
    frame = _score(spark, index, artifacts["onnx"])

    assert len(frame) == len(index) == sum(counts.values())
    assert frame["path"].is_unique
    failed = frame[frame["error"].notna()]
    assert len(failed) == counts["bad"]
    for _, row in failed.iterrows():
        name = Path(row["path"]).name
        assert BAD_FILES[name] in row["error"], row["error"]
        assert row[["predicted_label", "probability", "prob_Forest"]].isna().all()
    scored = frame[frame["error"].isna()]
    assert scored["predicted_label"].isin(CLASSES).all()
    np.testing.assert_allclose(scored[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-5)
    assert (scored["probability"] == scored[[f"prob_{c}" for c in CLASSES]].max(axis=1)).all()
    assert (
        scored["predicted_label_3"]
        == scored["predicted_label"].map(LandCover.from_params(LAND_COVER).to_three_class)
    ).all()
    folders = frame["path"].map(lambda p: Path(p).parent.name)
    assert (frame["true_label"].fillna("-") == folders.where(folders.isin(CLASSES), "-")).all()
    assert frame["true_label"].isna().sum() == counts["unlabelled"]
    assert (frame["image_id"] == frame["path"].map(lambda p: Path(p).stem)).all()


@pytest.mark.spark
def test_keras_backend_and_binary_file_input_agree_with_onnx(spark, tiles, artifacts):
    folder, _ = tiles
    index = FileIndexDataset(path=str(folder), filename_suffix=".png").load()
    onnx_rows = _score(spark, index, artifacts["onnx"], prefetch=False)
    keras_rows = _score(spark, index, artifacts["keras"], backend="keras")
    binary = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.{png,PNG}")
        .option("recursiveFileLookup", "true")
        .load(str(folder))
    )
    binary_rows = _score(spark, binary, artifacts["onnx"])

    for other in (keras_rows, binary_rows):
        assert len(other) == len(onnx_rows)
        assert (other["predicted_label"].fillna("") == onnx_rows["predicted_label"].fillna("")).all()
        assert (other["error"].isna() == onnx_rows["error"].isna()).all()
        np.testing.assert_allclose(other["prob_Forest"], onnx_rows["prob_Forest"], atol=1e-4)
    # binaryFile paths are URIs (file:/...), the index's are plain; the files are the same
    assert list(binary_rows["image_id"]) == list(onnx_rows["image_id"])


@pytest.mark.spark
def test_binary_input_must_have_the_binary_file_columns(spark, artifacts):
    frame = spark.createDataFrame([("a.png",)], "path string")
    with pytest.raises(ValueError, match="content"):
        score_images(frame, artifacts["onnx"], LAND_COVER, SCORING)


@pytest.mark.spark
def test_a_model_of_the_other_backend_is_refused(spark, tiles, artifacts):
    index = FileIndexDataset(path=str(tiles[0]), filename_suffix=".png").load()
    with pytest.raises(ValueError, match="backend is 'onnx' but the scoring model is keras"):
        score_images(index, artifacts["keras"], LAND_COVER, SCORING)


def test_without_a_session_the_error_says_how_to_get_one(monkeypatch):
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    with pytest.raises(RuntimeError, match="spark"):
        active_spark_session()


@pytest.mark.spark
def test_binary_input_with_no_file_is_an_error(spark, tmp_path, artifacts):
    (tmp_path / "empty").mkdir()
    frame = spark.read.format("binaryFile").load(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="found no file"):
        score_images(frame, artifacts["onnx"], LAND_COVER, SCORING)


class _Storage:
    """An fsspec-like filesystem whose every open fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def open(self, path, mode="rb"):
        raise self.error


def test_unreachable_or_refusing_storage_fails_the_task_one_bad_file_is_a_row():
    from landuse_kedro.scoring import read_or_reason

    reason = read_or_reason(_Storage(FileNotFoundError("no such blob")), "container/a.png")
    assert reason.startswith("cannot read file: FileNotFoundError")  # one file: its row
    for error in (ConnectionError("connection refused"), TimeoutError("timed out")):
        with pytest.raises(type(error)):  # the storage itself: the run stops, not 10,000 rows
            read_or_reason(_Storage(error), "container/a.png")

    class ClientAuthenticationError(Exception):  # azure.core's name, without importing azure
        pass

    with pytest.raises(ClientAuthenticationError):
        read_or_reason(_Storage(ClientAuthenticationError("Server failed to authenticate")), "c/a.png")


def test_the_summary_counts_the_listing_the_scorer_saw():
    """One listing: the summary takes the scorer's own `scored_image_list`, so files added or
    removed during the run cannot make it disagree with the table."""
    from landuse_kedro.pipelines.spark_scoring.pipeline import create_pipeline

    nodes = {node.name: node for node in create_pipeline().nodes}
    assert "scored_image_list" in nodes["score_image_files"].outputs
    assert "scored_image_list" in nodes["summarise_scoring"].inputs
    assert "scoring_images" not in nodes["summarise_scoring"].inputs
