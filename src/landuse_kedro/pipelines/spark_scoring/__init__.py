"""Score a whole image set in parallel on Spark, losing nothing: one output row per input file."""

from landuse_kedro.pipelines.spark_scoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
