"""The frozen backbone's pooled features of tile files: computed by the Spark workers, kept in a table
keyed by what determines them, and read back by the driver one epoch at a time.

Why: with pretrained weights the backbone is frozen and its BatchNorm runs in inference mode, so a
tile's features depend only on its bytes and on the features model (backbone, weights, image size,
the pooled taps). Training at the walkthrough's scale (44,184 training tiles) decoded every tile into
driver memory and ran 353,000 backbone passes in one process while the workers sat idle. Here Spark
rows name tiles (a file URL and the sha256 of its bytes); each Python worker loads the features model
once (the scorer's per-worker cache), reads, checks and decodes its own files and predicts each
dihedral view in numpy batches. The rows land in ``tile_features`` keyed by ``feature_model`` and
``content_sha256``, so a second run (other head settings, or more tiles) computes only what is missing.
The head then reads one random view per tile per epoch, in a seeded order, straight from the table's
Parquet files with Arrow (no Spark job, so the driver's JVM stays small): the driver never holds images,
nor more than one view of each training tile's features.

The views are the flips and quarter turns that ``training.augmentation`` allows (8 with both), the
geometry the image pipeline draws from. Colour jitter is not cached (it applies to fine-tuning, which
runs on images).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from landuse_kedro.datasets.file_index import FileIndex
from landuse_kedro.failures import error_chain
from landuse_kedro.models.predictor import cached_predictor, prefetched
from landuse_kedro.scoring import MAX_BATCHES_PER_TASK, READ_THREADS, ImageError, decode_image, read_or_reason
from landuse_kedro.spark import active_spark_session, task_count
from landuse_kedro.storage import shippable

if TYPE_CHECKING:
    import pyarrow.dataset as ds
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

FEATURE_DTYPE = np.dtype("<f2")  # float16: half the table and the stream; accuracy measured (README)
FEATURE_SCHEMA = (
    "feature_model string, content_sha256 string, view int, features binary, "
    "tile_id string, split string, class_name string, error string"
)
"""``tile_features``: one row per tile content and view (``features``: little-endian float16), or one
row with ``view`` null and ``error`` set for a file that could not be used."""
HASH_SCHEMA = "url string, content_sha256 string, error string"
TODO_SCHEMA = (
    "url string, content_sha256 string, tile_id string, split string, class_name string, views array<int>"
)


def dihedral_views(augmentation: Mapping[str, Any]) -> tuple[int, ...]:
    """View ids ``4 * flip + quarter_turns`` that the augmentation settings allow; 0 is the tile as is."""
    flips = (0, 1) if augmentation.get("flip", True) else (0,)
    turns = range(4) if augmentation.get("rotate90", True) else range(1)
    return tuple(4 * flip + turn for flip in flips for turn in turns)


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """``images`` (N, H, W, C) left-right flipped when ``view >= 4``, then turned ``view % 4`` quarter turns
    (the same ops as ``training.inputs.augment``)."""
    if view >= 4:
        images = images[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(images, view % 4, axes=(1, 2)))


@dataclass(frozen=True)
class FeatureExtractor:
    """The features model as the workers run it: ``key`` names what determines its output (see
    :func:`feature_model_key`), ``payload`` is its ONNX export (uint8 image -> pooled features)."""

    key: str
    payload: bytes = b""

    def __repr__(self) -> str:
        return f"FeatureExtractor(key={self.key!r}, {len(self.payload)} bytes)"


def feature_model_key(settings: Mapping[str, Any], weights: Sequence[np.ndarray]) -> str:
    """A digest of the settings that shape the features (backbone, weights name, image size, taps) and of
    the features model's weight values: the same key means the same features for the same bytes."""
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class WorkerSettings:
    """What a feature task needs; small and picklable."""

    image_size: int
    batch_size: int
    threads: int
    prefetch: bool = True


def _shipped(index: FileIndex) -> FileIndex:
    """``index`` without secrets: executors take their credentials from their own environment."""
    return FileIndex((), index.protocol, shippable(index.storage_options))


def hash_files(index: FileIndex, urls: Sequence[str], partitions_per_core: int = 2) -> pd.DataFrame:
    """``url``, ``content_sha256`` (or ``error``) of each file, read by the Spark workers: a few seconds
    for 44,000 tiles, and what lets a run tell which tiles the table already holds."""
    spark = active_spark_session()
    shipped = _shipped(index)
    tasks = task_count(len(urls), spark.sparkContext.defaultParallelism, partitions_per_core, 4096)
    rows = spark.createDataFrame(spark.sparkContext.parallelize([(u,) for u in urls], tasks), "url string")

    def digest(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fs = shipped.filesystem()
        with ThreadPoolExecutor(max_workers=READ_THREADS) as readers:
            for frame in frames:
                blobs = list(readers.map(lambda url: read_or_reason(fs, url), frame["url"]))
                yield pd.DataFrame(
                    {
                        "url": frame["url"],
                        "content_sha256": [
                            hashlib.sha256(b).hexdigest() if isinstance(b, bytes) else None for b in blobs
                        ],
                        "error": [b if isinstance(b, str) else None for b in blobs],
                    }
                )

    return rows.mapInPandas(digest, HASH_SCHEMA).toPandas()


def present_views(tile_features: DataFrame | None, feature_model: str) -> dict[str, set[int]]:
    """The views ``tile_features`` already holds for each tile content under ``feature_model``."""
    if tile_features is None:
        return {}
    from pyspark.sql import functions as F

    rows = (
        tile_features.where((F.col("feature_model") == feature_model) & F.col("error").isNull())
        .groupBy("content_sha256")
        .agg(F.collect_set("view").alias("views"))
        .toLocalIterator()
    )
    return {row.content_sha256: set(row.views) for row in rows}


def compute_features(
    index: FileIndex,
    todo: pd.DataFrame,
    extractor: FeatureExtractor,
    settings: WorkerSettings,
    partitions_per_core: int = 2,
) -> DataFrame:
    """The rows of ``tile_features`` for ``todo`` (``url``, ``content_sha256``, ``tile_id``, ``split``,
    ``class_name``, ``views``: the views still missing), computed lazily by the Spark workers: saving the
    result runs the job. Each task reads its files, checks that their bytes still have the hashed
    content, decodes them with the scorer's policy, and predicts each needed view of each batch."""
    spark = active_spark_session()
    tasks = task_count(
        -(-len(todo) // settings.batch_size),
        spark.sparkContext.defaultParallelism,
        partitions_per_core,
        MAX_BATCHES_PER_TASK,
    )
    columns = ["url", "content_sha256", "tile_id", "split", "class_name", "views"]
    records = [(*r[:5], [int(v) for v in r[5]]) for r in todo[columns].itertuples(index=False)]
    rows = spark.createDataFrame(
        spark.sparkContext.parallelize(records, tasks),
        TODO_SCHEMA,
    )
    model = spark.sparkContext.broadcast(extractor.payload)
    shipped, key = _shipped(index), extractor.key

    def extract(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        predictor = cached_predictor(key, "onnx", lambda: model.value, settings.threads)
        yield from _feature_rows(frames, shipped, key, predictor, settings)

    return rows.mapInPandas(extract, FEATURE_SCHEMA)


def _feature_rows(frames, index: FileIndex, key: str, predictor, settings: WorkerSettings):
    """mapInPandas body of :func:`compute_features`: reads the next batch while the model runs."""
    fs = index.filesystem()
    readers = ThreadPoolExecutor(max_workers=READ_THREADS)

    def chunks() -> Iterator[pd.DataFrame]:
        for frame in frames:
            for start in range(0, len(frame), settings.batch_size):
                yield frame.iloc[start : start + settings.batch_size].reset_index(drop=True)

    def prepare(chunk: pd.DataFrame) -> tuple[pd.DataFrame, list[np.ndarray | str]]:
        blobs = list(readers.map(lambda url: read_or_reason(fs, url), chunk["url"]))
        return chunk, [
            _checked_tile(blob, sha, settings.image_size) for blob, sha in zip(blobs, chunk["content_sha256"])
        ]

    try:
        for chunk, tiles in prefetched(chunks(), prepare, settings.prefetch):
            yield _predict_views(chunk, tiles, key, predictor)
    finally:
        readers.shutdown()


def _checked_tile(blob: bytes | str, sha: str, image_size: int) -> np.ndarray | str:
    if isinstance(blob, str):
        return blob
    if hashlib.sha256(blob).hexdigest() != sha:
        return "the file changed while the features were computed: run training again"
    try:
        return decode_image(blob, image_size)
    except ImageError as error:
        return str(error)


def _predict_views(chunk: pd.DataFrame, tiles: list[np.ndarray | str], key: str, predictor) -> pd.DataFrame:
    """One row per good tile and needed view, one error row per bad tile."""
    out: list[pd.DataFrame] = []
    good = [i for i, tile in enumerate(tiles) if isinstance(tile, np.ndarray)]
    wanted = [set(chunk.at[i, "views"]) for i in range(len(chunk))]
    for view in sorted(set().union(*(wanted[i] for i in good))) if good else []:
        rows = [i for i in good if view in wanted[i]]
        try:
            features = np.asarray(predictor(dihedral(np.stack([tiles[i] for i in rows]), view)))
        except Exception as error:  # the model failed on this batch: rows say why
            for i in rows:
                tiles[i] = f"features failed: {error_chain(error)}"
            continue
        frame = chunk.iloc[rows][["content_sha256", "tile_id", "split", "class_name"]].copy()
        frame["view"] = view
        frame["features"] = [f.astype(FEATURE_DTYPE).tobytes() for f in features.reshape(len(rows), -1)]
        frame["error"] = None
        out.append(frame)
    bad = [i for i, tile in enumerate(tiles) if isinstance(tile, str)]
    if bad:
        frame = chunk.iloc[bad][["content_sha256", "tile_id", "split", "class_name"]].copy()
        frame["view"] = None
        frame["features"] = None
        frame["error"] = [f"{chunk.at[i, 'url']}: {tiles[i]}" for i in bad]
        out.append(frame)
    table = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["content_sha256"])
    table["feature_model"] = key
    table = table.reindex(columns=[c.split()[0] for c in FEATURE_SCHEMA.split(", ")])
    return table.astype({"view": "Int32"})


def failed_tiles(table: ds.Dataset, feature_model: str, shas: Sequence[str]) -> list[str]:
    """The error rows of ``shas`` (file and reason) that no good row of the same content outweighs."""
    import pyarrow.dataset as ds

    where = (ds.field("feature_model") == feature_model) & ds.field("content_sha256").isin(sorted(set(shas)))
    good: set[str] = set()
    errors: dict[str, set[str]] = {}
    for batch in _scan(table, where, ["content_sha256", "error"]):
        for sha, error in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            if error is None:
                good.add(sha)
            else:
                errors.setdefault(sha, set()).add(error)
    return sorted({e for sha, reasons in errors.items() if sha not in good for e in reasons})


_VIEWS = 8  # dihedral views are 0..7: a (tile, view) pair's code is tile * 8 + view


def _scan(table: ds.Dataset, where: ds.Expression, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """``table``'s rows matching ``where``, a small batch at a time: buffered page reads and no
    read-ahead, so the driver holds about one batch of the table, not row groups of it."""
    import pyarrow.dataset as ds

    options = ds.ParquetFragmentScanOptions(use_buffered_stream=True, buffer_size=1 << 20, pre_buffer=False)
    return table.to_batches(
        columns=columns,
        filter=where,
        batch_size=4096,
        batch_readahead=1,
        fragment_readahead=1,
        fragment_scan_options=options,
        use_threads=False,
    )


def _feature_matrix(column: pa.Array) -> np.ndarray:
    """(rows, D) float16 from a binary column of equal-length little-endian float16 vectors, unboxed."""
    offsets = np.frombuffer(column.buffers()[1], np.int32 if pa.types.is_binary(column.type) else np.int64)
    offsets = offsets[column.offset : column.offset + len(column) + 1]
    lengths = np.diff(offsets)
    if len(column) and (lengths != lengths[0]).any():
        raise ValueError(f"tile_features holds feature vectors of {sorted(set(lengths.tolist()))} bytes.")
    data = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0] : offsets[-1]] if len(column) else b""
    return np.frombuffer(data, FEATURE_DTYPE).reshape(len(column), -1)


def _gather(
    table: ds.Dataset, feature_model: str, shas: Sequence[str], tile_views: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The features of each tile ``i`` (content ``shas[i]``) in view ``tile_views[i]``, in one pass
    over ``table``: (features of each distinct (content, view) pair, the pair of each tile). Raises
    naming the tiles that have no row. Rows are matched by key, so a row written twice (two runs
    appending the same content) or another model's rows change nothing."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if not len(shas):
        raise ValueError("No tiles to read the features of.")
    codes, contents = pd.factorize(pd.Series(shas, dtype=object))
    pairs, pair_of_tile = np.unique(codes.astype(np.int64) * _VIEWS + tile_views, return_inverse=True)
    value_set = pa.array(contents, pa.string())
    features: np.ndarray | None = None
    found = np.zeros(len(pairs), bool)
    where = (ds.field("feature_model") == feature_model) & ds.field("error").is_null()
    for batch in _scan(table, where, ["content_sha256", "view", "features"]):
        content = pc.index_in(batch.column("content_sha256"), value_set=value_set).fill_null(-1).to_numpy()
        code = content.astype(np.int64) * _VIEWS + batch.column("view").to_numpy(zero_copy_only=False)
        slot = np.searchsorted(pairs, code).clip(max=len(pairs) - 1)
        hit = (content >= 0) & (pairs[slot] == code)
        if not hit.any():
            continue
        rows = _feature_matrix(batch.column("features").filter(pa.array(hit)))
        if features is None:
            features = np.empty((len(pairs), rows.shape[1]), FEATURE_DTYPE)
        features[slot[hit]], found[slot[hit]] = rows, True
    if features is None or not found.all():
        missing = np.flatnonzero(~found[pair_of_tile])
        named = ", ".join(f"{shas[i]} view {int(tile_views[i])}" for i in missing[:3])
        raise ValueError(f"tile_features has no row for {len(missing)} tiles, e.g. {named}.")
    return features, pair_of_tile


def collect_features(table: ds.Dataset, feature_model: str, shas: Sequence[str], view: int = 0) -> np.ndarray:
    """(len(shas), D) float32 features of ``shas`` in one ``view``, in the order given (validation tiles:
    small beside the training set's views). Raises when a tile has no row."""
    features, pair_of_tile = _gather(table, feature_model, shas, np.full(len(shas), view, np.int64))
    return features[pair_of_tile].astype(np.float32)


def epoch_draws(n_tiles: int, views: Sequence[int], epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s order of the tiles and the view each is seen in: seeded, new every epoch (the
    image pipeline's epoch: every tile once, in one random flip and turn)."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n_tiles), np.asarray(views)[rng.integers(0, len(views), n_tiles)]


def epoch_batches(
    table: ds.Dataset,
    feature_model: str,
    shas: Sequence[str],
    labels: np.ndarray,
    views: Sequence[int],
    batch_size: int,
    seed: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (features, labels) batches, epoch after epoch, ``ceil(len(shas) / batch_size)`` per epoch:
    each epoch one pass over the table on the driver (Arrow, no Spark job) picks each tile's drawn view,
    so the driver holds one view per tile (float16), never the table nor the images."""
    n = len(shas)
    epoch = 0
    while True:
        order, view = epoch_draws(n, views, epoch, seed)
        tile_views = np.empty(n, np.int64)
        tile_views[order] = view
        features, pair_of_tile = _gather(table, feature_model, shas, tile_views)
        for start in range(0, n, batch_size):
            tiles = order[start : start + batch_size]
            yield features[pair_of_tile[tiles]].astype(np.float32), labels[tiles]
        del features
        epoch += 1


def read_tiles(index: FileIndex, urls: Sequence[str], image_size: int) -> np.ndarray:
    """(len(urls), size, size, 3) uint8 tiles read and decoded on the driver with the scorer's policy: for
    the few the driver needs at once (a batch, the int8 calibration sample). Raises naming a bad file."""
    fs = index.filesystem()
    with ThreadPoolExecutor(max_workers=READ_THREADS) as readers:
        blobs = list(readers.map(lambda url: read_or_reason(fs, url), urls))
    out = np.empty((len(urls), image_size, image_size, 3), np.uint8)
    for i, (url, blob) in enumerate(zip(urls, blobs, strict=True)):
        if isinstance(blob, str):
            raise ValueError(f"Tile '{url}' cannot be read: {blob}")
        try:
            out[i] = decode_image(blob, image_size)
        except ImageError as error:
            raise ValueError(f"Tile '{url}' cannot be used: {error}") from None
    return out


def tile_batches(
    index: FileIndex, urls: Sequence[str], image_size: int, batch_size: int
) -> Iterator[np.ndarray]:
    """``urls``' tiles in order, ``batch_size`` at a time, the next batch read while the caller works."""
    starts = range(0, len(urls), batch_size)
    return prefetched(starts, lambda s: read_tiles(index, urls[s : s + batch_size], image_size), True)
