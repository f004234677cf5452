"""Score image files with a Keras or ONNX model on Spark: one output row per input file, always.

Its decode policy and row shape are shared: ``window_jobs`` scores tile windows into the same columns,
and the feature job reads tile files with the same checks. Spark carries only paths: each Python
worker reads the bytes itself with fsspec, which was measured at about twice the throughput of sending
them through Spark's ``binaryFile`` source (still accepted, for clusters where only Hadoop's ABFS driver
holds the credentials). The model's bytes reach executors by broadcast (executors need not share the
driver's disk) and are loaded once per Python worker, then reused by every task that worker runs.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from landuse_kedro.classes import LandCover
from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.models.predictor import Predictor, ShippedModel, model_key, prefetched
from landuse_kedro.spark import active_spark_session, task_count
from landuse_kedro.storage import is_unreachable, redact_environment_secrets, shippable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

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


def read_or_reason(fs, path: str) -> bytes | str:
    try:
        with fs.open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)  # decode_image refuses anything longer
    except Exception as error:  # a missing/unreadable file is a row, not a failed job
        if is_unreachable(error):  # the storage, not the file: fail the task (and the run) now
            raise
        return redact_environment_secrets(f"cannot read file: {type(error).__name__}: {error}")


def _score_partition(
    frames: Iterator[pd.DataFrame],
    settings: ScoringSettings,
    model: ShippedModel,
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
            blobs = list(readers.map(lambda p: read_or_reason(fs, p), paths))
        return paths, [_decode_or_reason(b, settings.image_size) for b in blobs]

    try:
        for paths, images in prefetched(chunks(), prepare, settings.prefetch):
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
    model = broadcast_model(spark, scoring_model, scoring)
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


def broadcast_model(spark, scoring_model: ModelArtifact, scoring: dict[str, Any]) -> ShippedModel:
    if scoring.get("backend", scoring_model.format) != scoring_model.format:
        raise ValueError(
            f"params:scoring.backend is '{scoring['backend']}' but the scoring model is "
            f"{scoring_model.format}: re-export it (training pipeline) or change the backend."
        )
    log_precision(scoring_model, scoring)
    return ShippedModel(
        model_key(scoring_model), scoring_model.format, spark.sparkContext.broadcast(scoring_model.payload)
    )


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
