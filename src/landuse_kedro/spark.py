"""The Spark session (start, find, reuse) and the sizing of Spark jobs: the one module that knows the
session. Nodes never build one: ``hooks.SparkHooks`` starts it from ``conf/<env>/spark.yml`` and nodes
and datasets find it here."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)


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


def running_session():
    """The active session, or None (no session, or no PySpark installed: datasets then work alone)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def register_python_data_sources(session) -> None:
    """Add the ``fsspec_parquet`` format (Spark Parquet tables in storage Hadoop cannot reach).

    Python data sources exist from Spark 4.0; older clusters (HDInsight's 3.3) write through
    their own Hadoop Azure driver and do not need it.
    """
    if int(session.version.split(".")[0]) < 4:
        return
    from landuse_kedro import spark_fsspec

    spark_fsspec.register(session)


def spark_is_running() -> bool:
    """Whether this process already has a SparkContext, which ``getOrCreate`` would reuse.

    The context, not ``SparkSession.getActiveSession()``, is what ``stop()`` ends, and it is
    process-wide, while the active session is per thread (a session built in another thread is
    not "active" here but would still be reused and stopped).
    """
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


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


def task_count(items: int, cores: int, per_core: int, max_per_task: int) -> int:
    """A few tasks per core evens out stragglers; no task is empty or longer than ``max_per_task``
    items (right after a session starts, ``cores`` can undercount a real cluster)."""
    return max(1, min(items, max(cores * per_core, -(-items // max_per_task))))
