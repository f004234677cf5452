"""Spark Parquet tables written and read through fsspec, for Spark without Hadoop's Azure driver.

Spark writes ``parquet`` through Hadoop, which reaches Azure storage only with the ``hadoop-azure``
jar: the pyspark wheel does not ship it (and Azurite has no DFS endpoint for ABFS anyway). This
Python data source (pyspark >= 4.0), format ``fsspec_parquet``, writes each task's rows as one
Parquet part file through fsspec (adlfs for ``abfs[s]://``) and reads the part files back, so a
``spark.SparkDataset`` can keep its table in the same container as every other output.

Credentials never go through options (they can appear in plans and logs): the filesystem finds
its own, e.g. adlfs reads ``AZURE_STORAGE_CONNECTION_STRING`` from the environment.

Writes are all-or-nothing: tasks write to ``_temporary/<job>/``; only the driver's ``commit``
(after every task succeeded) replaces the table's part files (overwrite) or adds to them
(append); ``abort`` removes the staged files. The commit itself is not atomic (blob storage has no
atomic rename): a driver that dies between moving new parts in and deleting old ones leaves both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

FORMAT = "fsspec_parquet"
STAGING = "_temporary"
PART_GLOB = "part-*.parquet"


def register(spark) -> None:
    """Make ``format("fsspec_parquet")`` available in this session."""
    spark.dataSource.register(FsspecParquet)


def _table(options) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the table's folder (protocol stripped) from the ``path`` option."""
    url = options.get("path")
    if not url:
        raise ValueError(f"The '{FORMAT}' data source needs a path: .save(path) or .load(path).")
    # Not url_to_fs: adlfs would take the account name from the URL's host and then ignore
    # AZURE_STORAGE_CONNECTION_STRING; the environment alone says where and how to connect.
    protocol, _ = fsspec.core.split_protocol(url)
    fs = fsspec.filesystem(protocol or "file")
    return fs, fsspec.core.strip_protocol(url).rstrip("/")


def _parts(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    return sorted(fs.glob(f"{root}/{PART_GLOB}"))


class FsspecParquet(DataSource):
    """Parquet part files in any fsspec filesystem (see the module docstring)."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        fs, root = _table(self.options)
        parts = _parts(fs, root)
        if not parts:
            # SparkDataset.exists() looks for this phrase, as in Spark's own message.
            raise FileNotFoundError(f"Path does not exist: {self.options['path']} (no {PART_GLOB})")
        with fs.open(parts[0], "rb") as handle:
            return from_arrow_schema(pq.read_schema(handle))

    def reader(self, schema: StructType) -> DataSourceReader:
        return _Reader(self.options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> _Writer:
        return _Writer(self.options, schema, overwrite)


class _Reader(DataSourceReader):
    """One input partition per part file, read as Arrow record batches."""

    def __init__(self, options, schema: StructType) -> None:
        self.options = dict(options)
        self.schema = schema

    def partitions(self) -> Sequence[InputPartition]:
        fs, root = _table(self.options)
        return [InputPartition(part) for part in _parts(fs, root)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        fs, _ = _table(self.options)
        with fs.open(partition.value, "rb") as handle:
            table = pq.read_table(handle, columns=self.schema.names)
        yield from table.to_batches()


@dataclass
class _Staged(WriterCommitMessage):
    path: str | None  # None: the task had no rows


class _Writer(DataSourceArrowWriter):
    def __init__(self, options, schema: StructType, overwrite: bool) -> None:
        self.options = dict(options)
        self.schema = schema
        self.overwrite = overwrite
        self.job = uuid.uuid4().hex  # made on the driver, shipped to every task

    def _staging(self, root: str) -> str:
        return f"{root}/{STAGING}/{self.job}"

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _Staged:
        fs, root = _table(self.options)
        path = f"{self._staging(root)}/part-{uuid.uuid4().hex}.parquet"
        writer = None
        try:
            for batch in iterator:
                if writer is None:
                    fs.makedirs(self._staging(root), exist_ok=True)  # local filesystems need it
                    handle = fs.open(path, "wb")
                    writer = pq.ParquetWriter(handle, batch.schema)
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
                handle.close()
        return _Staged(path if writer is not None else None)

    def commit(self, messages: list[_Staged | None]) -> None:
        fs, root = _table(self.options)
        staged = [m.path for m in messages if m is not None and m.path is not None]
        if not staged:  # no rows at all: keep the schema readable
            empty = f"{self._staging(root)}/part-{uuid.uuid4().hex}.parquet"
            fs.makedirs(self._staging(root), exist_ok=True)
            with fs.open(empty, "wb") as handle:
                pq.write_table(to_arrow_schema(self.schema).empty_table(), handle)
            staged = [empty]
        old = _parts(fs, root) if self.overwrite else []
        for path in staged:
            fs.mv(path, f"{root}/{path.rsplit('/', 1)[1]}")
        if old:
            fs.rm(old)
        self._clean(fs, root)

    def abort(self, messages: list[_Staged | None]) -> None:
        fs, root = _table(self.options)
        self._clean(fs, root)

    def _clean(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        if fs.exists(self._staging(root)):
            fs.rm(self._staging(root), recursive=True)
