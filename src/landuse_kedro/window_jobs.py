"""The Spark jobs over tile windows: labelling (data_preparation) and read + label + score
(development_inference). A row names a scene and a block of its windows; the worker opens the scene
itself (``tiling.OpenScenes``), so pixels never travel through the driver or the JVM. Plans are made
shippable (secrets stripped: executors take them from their environment) here, before they travel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landuse_kedro.datasets.model_file import ModelArtifact
from landuse_kedro.models.predictor import ShippedModel, prefetched
from landuse_kedro.scoring import ScoringSettings, broadcast_model, score_batch, spark_schema
from landuse_kedro.spark import active_spark_session, task_count
from landuse_kedro.tiling import (
    BLOCK_TILES,
    LABEL_COLUMNS,
    WINDOW_PLACE,
    Block,
    OpenScenes,
    ScenePlan,
    tile_label,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

MAX_BLOCKS_PER_TASK = 16
"""Bounds a Spark task (and so a retry's cost and a straggler's tail)."""
BLOCK_SCHEMA = "scene string, row bigint, col bigint, n_rows bigint, n_cols bigint"
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
FILE_COLUMNS = ("path", "true_label")
"""The scorer's columns about a file, which a window row does not carry."""


def block_rows(spark, plans: Iterable[ScenePlan], per_core: int = 2):
    """A DataFrame of (scene, block) rows, grouped by scene and row-major within it, in a few
    tasks per core (none over ``MAX_BLOCKS_PER_TASK`` blocks), for ``mapInPandas``."""
    rows = [(plan.key, *block) for plan in plans for block in plan.blocks()]
    tasks = task_count(len(rows), spark.sparkContext.defaultParallelism, per_core, MAX_BLOCKS_PER_TASK)
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, tasks), BLOCK_SCHEMA), len(rows), tasks


def label_windows(plans: Mapping[str, ScenePlan]) -> pd.DataFrame:
    """Label rows of every tile of every planned scene, computed by Spark tasks."""
    rows, n_blocks, tasks = block_rows(active_spark_session(), plans.values())
    logger.info(
        "Labelling %d tiles of %d scenes: %d blocks of up to %d x %d tiles in %d Spark tasks",
        sum(len(p.tiles) for p in plans.values()),
        len(plans),
        n_blocks,
        BLOCK_TILES,
        BLOCK_TILES,
        tasks,
    )
    schema = "scene string, " + ", ".join(f"{name} {kind}" for name, kind in LABEL_COLUMNS.items())
    plans = {key: plan.shippable() for key, plan in plans.items()}

    def label(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        opened = OpenScenes()
        try:
            for frame in frames:
                for block in frame.itertuples(index=False):
                    scene = opened(plans[block.scene])
                    key = (block.row, block.col, block.n_rows, block.n_cols)
                    for labels, _ in scene.blocks_or_tiles(key, with_pixels=False):
                        yield labels.assign(scene=block.scene)
        finally:
            opened.close()

    return rows.mapInPandas(label, schema).toPandas()


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

    One row per tile: ``tile_id``, the scorer's prediction columns (no file ``path`` or folder
    ``true_label``: a window has neither; its label is ``label_class``) and ``WINDOW_COLUMNS``; a
    window that cannot be read is a row with ``error`` set. Lazy, like :func:`score_images`.
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
    model = broadcast_model(spark, scoring_model, scoring)
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

    return rows.mapInPandas(score, _window_schema(settings.classes))


def _window_schema(classes: tuple[str, ...]):
    from pyspark.sql.types import StructField, StructType

    schema = StructType(
        [
            StructField("tile_id" if field.name == "image_id" else field.name, field.dataType, field.nullable)
            for field in spark_schema(classes).fields
            if field.name not in FILE_COLUMNS
        ]
    )
    for name, kind in WINDOW_COLUMNS.items():  # StructType.add takes JSON type names
        schema = schema.add(name, {"int": "integer", "bigint": "long"}.get(kind, kind))
    return schema


def _score_window_partition(
    frames: Iterator[pd.DataFrame],
    plans: dict[str, ScenePlan],
    settings: ScoringSettings,
    model: ShippedModel,
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
        # One thread prepares: scenes open, switch and close there (GDAL environments are per thread).
        plan, block = item
        return plan, list(opened(plan).blocks_or_tiles(block, with_pixels=True))

    for plan, parts in prefetched(blocks(), prepare, settings.prefetch, finish=opened.close):
        labels = pd.concat([part for part, _ in parts], ignore_index=True)
        images: list[np.ndarray | str] = []
        for part, pixels in parts:
            images.extend(list(pixels) if pixels is not None else part["read_error"].tolist())
        ids = [plan.tile_id(r, c) for r, c in zip(labels["row"], labels["col"])]
        scored = score_batch([plan.url] * len(ids), images, predictor, settings, ids)
        scored = scored.drop(columns=list(FILE_COLUMNS)).rename(columns={"image_id": "tile_id"})
        labels["label_class"] = tile_label(labels, plan.classes)
        labels = labels.rename(columns={"nodata_pixels": "image_nodata_pixels"})
        labels["scene"] = plan.key
        yield pd.concat([scored, labels[list(WINDOW_COLUMNS)]], axis=1)
