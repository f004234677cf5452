"""Score image files with a Keras or ONNX model on Spark: one output row per input file, always.

Shared by ``spark_scoring`` and ``development_inference`` so both decode, predict and count failures
the same way. Spark carries only paths: each Python worker reads the bytes itself with fsspec, which
was measured at about twice the throughput of sending them through Spark's ``binaryFile`` source
(still accepted, for clusters where only Hadoop's ABFS driver holds the credentials). The model's
bytes reach executors by broadcast (executors need not share the driver's disk) and are loaded once
per Python worker, then reused by every task that worker runs.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import ModelArtifact, ModelFormat
from landuse_kedro.storage import is_unreachable, redact_environment_secrets, shippable
from landuse_kedro.tiling import (
    BLOCK_TILES,
    WINDOW_PLACE,
    Block,
    OpenScenes,
    ScenePlan,
    block_rows,
    task_count,
    tile_label,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]
"""(N, H, W, 3) uint8 RGB -> (N, classes) probabilities."""

MAX_BATCHES_PER_TASK = 16  # bounds a task's size (and so a retry's cost and a straggler's tail)
READ_THREADS = 8  # object stores answer in tens of ms per file: read a batch's files concurrently


class ImageError(ValueError):
    """An input file that cannot be scored; its message becomes the row's ``error``."""


ACCEPTED_FORMATS = ("PNG", "JPEG")
MAX_FILE_BYTES = 16 * 2**20
"""A 224 x 224 RGB tile is 150 KB raw; anything over this is not a tile (and is not read whole)."""


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """PNG/JPEG bytes -> (image_size, image_size, 3) uint8 RGB, or :class:`ImageError` saying why.

    The policy (docs/architecture.md): only PNG and JPEG are opened (never EPS, TIFF...); the size
    is checked from the header before any pixel is decoded, so a decompression bomb is a wrong
    size; 8-bit RGB is scored as is, fully opaque RGBA and palette images without transparency as
    their RGB; every other mode (grayscale, 16-bit, CMYK, transparency...) is refused by name,
    never converted silently.
    """
    if not data:
        raise ImageError("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file larger than {MAX_FILE_BYTES} bytes: not a {image_size} px tile")
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            if image.size != (image_size, image_size):  # from the header: nothing decoded yet
                raise ImageError(
                    f"wrong size {image.width}x{image.height}, expected {image_size}x{image_size}"
                )
            image.load()  # decodes now, so truncated data fails here and not later
            return _rgb(image)
    except Image.DecompressionBombError as error:
        raise ImageError(f"decompression bomb refused: {error}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"not a readable image (undecodable bytes, or not {' or '.join(ACCEPTED_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports truncation as OSError
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"cannot decode image: {error}") from None


def _rgb(image: Image.Image) -> np.ndarray:
    """The mode rules of :func:`decode_image`."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode == "RGBA":
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels[..., 3].min() < 255:
            raise ImageError("transparent pixels (mode RGBA): refusing to score them as opaque")
        return np.ascontiguousarray(pixels[..., :3])
    if mode == "P" and "transparency" not in image.info:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    detail = " with transparency" if mode == "P" else ""
    raise ImageError(f"unsupported image mode {mode}{detail}: tiles must be 8-bit RGB")


def load_predictor(model_format: ModelFormat, payload: bytes, threads: int) -> Predictor:
    """Build a predictor from a model file's bytes; ``threads`` caps the runtime's CPU threads,
    since Spark already runs one Python worker per core."""
    if model_format == "onnx":
        return _onnx_predictor(payload, threads)
    if model_format == "keras":
        return _keras_predictor(payload, threads)
    raise ValueError(f"Unknown model format '{model_format}': expected 'onnx' or 'keras'.")


def predict_classes(predict: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class indices of ``images``, predicted ``batch_size`` at a time (one batch of activations in
    memory, not the whole set's)."""
    return np.concatenate(
        [predict(images[i : i + batch_size]).argmax(axis=1) for i in range(0, len(images), batch_size)]
    )


def _onnx_predictor(payload: bytes, threads: int) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads otherwise spin for work, burning cores that other workers need: with 2
    # threads on a busy 2-core machine, EfficientNet-Lite0 ran at 120 images/s without, 85-94 with.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    dtype = np.uint8 if model_input.type == "tensor(uint8)" else np.float32

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run(None, {model_input.name: images.astype(dtype, copy=False)})[0]

    return predict


def _keras_predictor(payload: bytes, threads: int) -> Predictor:
    import tensorflow as tf

    from landuse_kedro.models.onnx_export import artifact_to_keras

    try:  # only possible before TensorFlow's runtime starts; a worker that already ran TF keeps its own
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    model = artifact_to_keras(payload)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(images))

    return predict


_PREDICTORS: dict[tuple[str, int], Predictor] = {}


def cached_predictor(
    key: str, model_format: ModelFormat, payload: Callable[[], bytes], threads: int
) -> Predictor:
    """One predictor per Python worker process and model: Spark reuses workers across tasks, so a
    model is deserialized once, not once per partition. ``payload`` is only called on a miss (it
    fetches the broadcast). A worker keeps one model at a time: executors' memory is small."""
    if (key, threads) not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[(key, threads)] = load_predictor(model_format, payload(), threads)
    return _PREDICTORS[(key, threads)]


def model_key(model: ModelArtifact) -> str:
    return hashlib.sha256(model.payload).hexdigest()


@dataclass(frozen=True)
class ScoringSettings:
    """What a worker needs from ``params:land_cover`` and ``params:scoring``; small and picklable.

    ``scoring.prefetch`` (optional, default true): read and decode the next batch while the model
    predicts the current one.
    """

    land_cover: LandCover
    image_size: int
    batch_size: int
    threads: int
    prefetch: bool = True

    @classmethod
    def from_params(cls, land_cover: dict[str, Any], scoring: dict[str, Any]) -> ScoringSettings:
        return cls(
            land_cover=LandCover.from_params(land_cover),
            image_size=int(scoring["image_size"]),
            batch_size=int(scoring["batch_size"]),
            threads=int(scoring["threads_per_worker"]),
            prefetch=bool(scoring.get("prefetch", True)),
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self.land_cover.classes


def output_columns(classes: Iterable[str]) -> list[str]:
    """The scoring output schema (docs/architecture.md), in order."""
    return [
        "image_id",
        "path",
        "true_label",
        "predicted_label",
        "probability",
        *(f"prob_{name}" for name in classes),
        "predicted_label_3",
        "error",
    ]


def true_label(path: str, classes: Iterable[str]) -> str | None:
    """The parent folder's name when it is a class (``.../validation/Forest/x.png``), else None."""
    folder = PurePosixPath(path).parent.name
    return folder if folder in set(classes) else None


def score_batch(
    paths: list[str],
    images: list[np.ndarray | str],
    predictor: Predictor,
    settings: ScoringSettings,
    ids: list[str] | None = None,
) -> pd.DataFrame:
    """Rows for one batch: ``images[i]`` is the decoded tile, or the reason it could not be read;
    ``ids`` name the images (default: the files' stems)."""
    good = [i for i, image in enumerate(images) if isinstance(image, np.ndarray)]
    probabilities = np.full((len(paths), len(settings.classes)), np.nan)
    probability = np.full(len(paths), np.nan)
    predicted_label: list[str | None] = [None] * len(paths)
    if good:
        predicted = predictor(np.stack([images[i] for i in good]))
        if predicted.shape != (len(good), len(settings.classes)):
            raise ValueError(
                f"Model output shape {predicted.shape} does not match {len(good)} images x "
                f"{len(settings.classes)} classes (params:land_cover.classes)."
            )
        probabilities[good] = predicted
        best = predicted.argmax(axis=1)
        probability[good] = predicted[np.arange(len(good)), best]
        for row, index in zip(good, best, strict=True):
            predicted_label[row] = settings.classes[index]
    frame = pd.DataFrame(
        {
            "image_id": ids if ids is not None else [PurePosixPath(p).stem for p in paths],
            "path": paths,
            "true_label": [true_label(p, settings.classes) for p in paths],
            "predicted_label": predicted_label,
            "probability": probability,
        }
    )
    for index, name in enumerate(settings.classes):
        frame[f"prob_{name}"] = probabilities[:, index]
    frame["predicted_label_3"] = [settings.land_cover.to_three_class(label) for label in predicted_label]
    frame["error"] = [None if isinstance(image, np.ndarray) else image for image in images]
    return frame


def _decode_or_reason(data: bytes | str, image_size: int) -> np.ndarray | str:
    if isinstance(data, str):  # already a read error
        return data
    try:
        return decode_image(data, image_size)
    except ImageError as error:
        return str(error)


def _read_or_reason(fs, path: str) -> bytes | str:
    try:
        with fs.open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)  # decode_image refuses anything longer
    except Exception as error:  # noqa: BLE001 - a missing/unreadable file is a row, not a failed job
        if is_unreachable(error):  # the storage, not the file: fail the task (and the run) now
            raise
        return redact_environment_secrets(f"cannot read file: {type(error).__name__}: {error}")


def _prefetched(
    items: Iterable[Any],
    prepare: Callable[[Any], Any],
    enabled: bool,
    finish: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """``prepare`` the next item in a background thread while the caller works on the current one
    (PIL decoding and file reads release the GIL, so this overlaps with inference); ``finish``
    runs last in the thread that prepared (GDAL environments must close where they opened)."""
    if not enabled:
        try:
            yield from map(prepare, items)
        finally:
            if finish is not None:
                finish()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = None
            for item in items:
                future = pool.submit(prepare, item)
                if pending is not None:
                    yield pending.result()
                pending = future
            if pending is not None:
                yield pending.result()
        finally:
            if finish is not None:
                pool.submit(finish).result()


@dataclass(frozen=True)
class _BroadcastModel:
    key: str
    format: ModelFormat
    payload: Any  # pyspark Broadcast[bytes]

    def predictor(self, threads: int) -> Predictor:
        return cached_predictor(self.key, self.format, lambda: self.payload.value, threads)


def _score_partition(
    frames: Iterator[pd.DataFrame],
    settings: ScoringSettings,
    model: _BroadcastModel,
    storage: tuple[str, dict[str, Any]] | None,
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: ``frames`` hold ``path`` (and ``content`` for binaryFile input)."""
    predictor = model.predictor(settings.threads)
    fs = None
    if storage is not None:
        import fsspec

        fs = fsspec.filesystem(storage[0], **storage[1])
    readers = ThreadPoolExecutor(max_workers=READ_THREADS) if fs is not None else None

    def chunks() -> Iterator[pd.DataFrame]:
        for frame in frames:
            for start in range(0, len(frame), settings.batch_size):
                yield frame.iloc[start : start + settings.batch_size]

    def prepare(chunk: pd.DataFrame) -> tuple[list[str], list[np.ndarray | str]]:
        paths = chunk["path"].tolist()
        if fs is None:
            blobs = chunk["content"].tolist()
        else:
            blobs = list(readers.map(lambda p: _read_or_reason(fs, p), paths))
        return paths, [_decode_or_reason(b, settings.image_size) for b in blobs]

    try:
        for paths, images in _prefetched(chunks(), prepare, settings.prefetch):
            yield score_batch(paths, images, predictor, settings)
    finally:
        if readers is not None:
            readers.shutdown()


def spark_schema(classes: Iterable[str]):
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    classes = list(classes)
    doubles = {"probability", *(f"prob_{name}" for name in classes)}
    return StructType(
        [
            StructField(name, DoubleType() if name in doubles else StringType(), nullable=True)
            for name in output_columns(classes)
        ]
    )


def active_spark_session():
    """The session the project's hook started; nodes never build one."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError(
            "No active SparkSession: run this node through Kedro with the `spark` tag so "
            "SparkHooks starts one from conf/<env>/spark.yml."
        )
    return spark


def score_images(
    images: FileIndex | DataFrame,
    scoring_model: ModelArtifact,
    land_cover: dict[str, Any],
    scoring: dict[str, Any],
    partitions_per_core: int = 2,
) -> DataFrame:
    """Score every file in ``images`` (a :class:`FileIndex`, or a Spark ``binaryFile`` DataFrame
    with ``path`` and ``content``): one row per file, scored or with ``error`` set.

    The result is lazy; writing it (``spark.SparkDataset``, overwrite) runs the job.
    """
    spark = active_spark_session()
    settings = ScoringSettings.from_params(land_cover, scoring)
    model = _broadcast_model(spark, scoring_model, scoring)
    if isinstance(images, FileIndex):
        if not len(images):
            raise ValueError("No image files to score: the FileIndex is empty.")
        partitions = task_count(
            -(-len(images) // settings.batch_size),
            spark.sparkContext.defaultParallelism,
            partitions_per_core,
            MAX_BATCHES_PER_TASK,
        )
        rows = spark.sparkContext.parallelize([(url,) for url in images.urls], partitions)
        paths = spark.createDataFrame(rows, "path string")
        storage = (images.protocol, shippable(images.storage_options))  # executors: secrets from their env
        logger.info(
            "Scoring %d files with the %s model in %d Spark tasks of up to %d-image batches "
            "(Spark shows the stage's progress)",
            len(images),
            scoring_model.format,
            partitions,
            settings.batch_size,
        )
    else:
        missing = {"path", "content"} - set(images.columns)
        if missing:
            raise ValueError(
                f"A DataFrame of images needs Spark's binaryFile columns; missing {sorted(missing)}."
            )
        if not images.inputFiles():
            raise ValueError("No image files to score: the binaryFile source found no file.")
        paths, storage = _with_skipped_empty_files(images.select("path", "content")), None

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _score_partition(frames, settings, model, storage)

    return paths.mapInPandas(score, spark_schema(settings.classes))


def check_failure_rate(
    total: int,
    errors: Iterable[str] | Mapping[str, int],
    max_failed_fraction: float,
    what: str,
    setting: str = "scoring.max_failed_fraction",
) -> None:
    """Fail when more than ``max_failed_fraction`` of ``total`` items failed: a wrong key, a wrong
    ``image_size`` or throttled storage fails every file, and that must not pass as a run with
    warnings. Called after the rows and metrics are saved, so they stay for the diagnosis.
    ``errors``: each failure's reason (grouped by what precedes its first colon), or reasons
    already grouped by cause with their counts."""
    if isinstance(errors, Mapping):
        reasons = pd.Series(dict(errors), dtype="int64").sort_values(ascending=False, kind="stable")
    else:
        reasons = pd.Series([error.split(":")[0] for error in errors], dtype=object).value_counts()
    failed = int(reasons.sum())
    if total and failed / total > max_failed_fraction:
        common = "; ".join(f"{count} x {reason}" for reason, count in reasons.head(3).items())
        raise RuntimeError(
            f"{failed} of {total} {what} failed ({failed / total:.0%}, above "
            f"{setting} = {max_failed_fraction}); commonest reasons: {common}. "
            "The rows and metrics are saved."
        )


def log_precision(scoring_model: ModelArtifact, scoring: dict[str, Any]) -> str:
    """Say which precision scoring runs, read from the model itself; ``scoring.precision`` chose
    the export at training time, so a model from elsewhere is scored as it is. An fp32 model where
    int8 was asked for is the expected case (training keeps fp32 when int8 loses accuracy, and a model
    from elsewhere is usually fp32): said at INFO. An int8 model where fp32 was asked for is a warning:
    full precision was asked for and is not what runs."""
    precision = scoring_model.precision
    requested = scoring.get("precision")
    if requested is not None and requested != precision:
        logger.log(
            logging.WARNING if requested == "fp32" else logging.INFO,
            "params:scoring.precision is %s but scoring_model is %s: scoring it as it is (training "
            "picks the export; see training_metrics.json `scoring_model`).",
            requested,
            precision,
        )
    logger.info("Scoring with the %s %s model", precision, scoring_model.format)
    return precision


def _broadcast_model(spark, scoring_model: ModelArtifact, scoring: dict[str, Any]) -> _BroadcastModel:
    if scoring.get("backend", scoring_model.format) != scoring_model.format:
        raise ValueError(
            f"params:scoring.backend is '{scoring['backend']}' but the scoring model is "
            f"{scoring_model.format}: re-export it (training pipeline) or change the backend."
        )
    log_precision(scoring_model, scoring)
    return _BroadcastModel(
        model_key(scoring_model), scoring_model.format, spark.sparkContext.broadcast(scoring_model.payload)
    )


WINDOW_COLUMNS = {
    "scene": "string",
    "row": "bigint",
    "col": "bigint",
    **WINDOW_PLACE,
    "label_class": "string",
    "label_share": "double",
    "image_nodata_pixels": "bigint",
}
"""What :func:`score_windows` adds to the scorer's columns: the tile's place on the grid and its
label from the plan's label raster (Spark DDL types)."""


def score_windows(
    plans: Iterable[ScenePlan],
    scoring_model: ModelArtifact,
    land_cover: dict[str, Any],
    scoring: dict[str, Any],
    partitions_per_core: int = 2,
) -> DataFrame:
    """Score every tile window of the ``plans``' scenes in one Spark job, with no tile files: a
    task opens each scene it meets (or its warped view) and the label raster once, then for each
    block of windows reads the pixels, labels the tiles and predicts them, reading the next block
    while the model runs. A block (up to 8 x 8 tiles) is one batch: ``scoring.batch_size``
    applies to files only.

    One row per tile: the scorer's columns (``image_id`` = tile id, ``path`` = the scene) plus
    ``WINDOW_COLUMNS``; a window that cannot be read is a row with ``error`` set. Lazy, like
    :func:`score_images`.
    """
    spark = active_spark_session()
    settings = ScoringSettings.from_params(land_cover, scoring)
    plans = {plan.key: plan.shippable() for plan in plans}
    for plan in plans.values():
        if settings.image_size != plan.tile_size:
            raise ValueError(
                f"params:scoring.image_size is {settings.image_size} but tiles are "
                f"{plan.tile_size} px (params:tiling.tile_size): the model expects one size."
            )
    model = _broadcast_model(spark, scoring_model, scoring)
    rows, n_blocks, tasks = block_rows(spark, plans.values(), partitions_per_core)
    logger.info(
        "Scoring %d tiles of %s with the %s model: %d blocks of up to %d tiles in %d Spark tasks "
        "(Spark shows the stage's progress)",
        sum(len(plan.tiles) for plan in plans.values()),
        ", ".join(plans),
        scoring_model.format,
        n_blocks,
        BLOCK_TILES**2,
        tasks,
    )

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _score_window_partition(frames, plans, settings, model)

    schema = spark_schema(settings.classes)
    for name, kind in WINDOW_COLUMNS.items():  # StructType.add takes JSON type names
        schema = schema.add(name, {"int": "integer", "bigint": "long"}.get(kind, kind))
    return rows.mapInPandas(score, schema)


def _score_window_partition(
    frames: Iterator[pd.DataFrame],
    plans: dict[str, ScenePlan],
    settings: ScoringSettings,
    model: _BroadcastModel,
) -> Iterator[pd.DataFrame]:
    predictor = model.predictor(settings.threads)
    opened = OpenScenes()  # rows come grouped by scene: each scene opens once per task

    def blocks() -> Iterator[tuple[ScenePlan, Block]]:
        for frame in frames:
            for b in frame.itertuples(index=False):
                yield plans[b.scene], (b.row, b.col, b.n_rows, b.n_cols)

    def prepare(
        item: tuple[ScenePlan, Block],
    ) -> tuple[ScenePlan, list[tuple[pd.DataFrame, np.ndarray | None]]]:
        plan, block = (
            item  # one thread prepares: scenes open, switch and close there (GDAL envs are per thread)
        )
        return plan, list(opened(plan).blocks_or_tiles(block, with_pixels=True))

    for plan, parts in _prefetched(blocks(), prepare, settings.prefetch, finish=opened.close):
        labels = pd.concat([part for part, _ in parts], ignore_index=True)
        images: list[np.ndarray | str] = []
        for part, pixels in parts:
            images.extend(list(pixels) if pixels is not None else part["read_error"].tolist())
        ids = [plan.tile_id(r, c) for r, c in zip(labels["row"], labels["col"])]
        scored = score_batch([plan.url] * len(ids), images, predictor, settings, ids)
        labels["label_class"] = tile_label(labels, plan.classes)
        labels = labels.rename(columns={"purity": "label_share", "nodata_pixels": "image_nodata_pixels"})
        labels["scene"] = plan.key
        yield pd.concat([scored, labels[list(WINDOW_COLUMNS)]], axis=1)


def _with_skipped_empty_files(images: DataFrame) -> DataFrame:
    """Spark's file sources silently skip zero-byte files; add them back (empty ``content``) so
    they get their row and error like any other bad file."""
    listed = {re.sub(r"^([a-zA-Z][\w+.-]*):///", r"\1:/", url) for url in images.inputFiles()}
    read = {row.path for row in images.select("path").collect()}
    if not read <= listed:
        raise ValueError(
            f"binaryFile paths do not match the source's file list (e.g. {sorted(read - listed)[:1]}): "
            "cannot check for skipped empty files."
        )
    skipped = sorted(listed - read)
    if not skipped:
        return images
    empty = images.sparkSession.createDataFrame([(path, b"") for path in skipped], images.schema)
    return images.unionByName(empty)
