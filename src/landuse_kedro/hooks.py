"""The Spark session comes from configuration (``conf/<env>/spark.yml``), never from a node."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)

SPARK_TAG = "spark"


class SparkHooks:
    """Start one SparkSession for runs that contain Spark nodes, and stop it afterwards.

    Starting Spark costs seconds and a JVM, so pipelines without a node tagged ``spark``
    (tiling, training) never pay for it.
    """

    def __init__(self) -> None:
        self._spark_conf: dict[str, Any] = {}
        self._session = None

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self._spark_conf = dict(context.config_loader["spark"] or {})
        except KeyError:
            self._spark_conf = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline) -> None:
        if any(SPARK_TAG in node.tags for node in pipeline.nodes):
            self._session = start_spark(self._spark_conf)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None


def start_spark(spark_conf: dict[str, Any]):
    """Build (or reuse) the SparkSession described by ``spark.yml``.

    Python workers must run the driver's interpreter, or they miss the project's packages.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    conf = SparkConf().setAll([(key, str(value)) for key, value in spark_conf.items()])
    session = SparkSession.builder.config(conf=conf).getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    logger.info(
        "Spark %s session on %s (app %s)",
        session.version,
        session.sparkContext.master,
        session.sparkContext.appName,
    )
    return session
