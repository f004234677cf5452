"""Transfer learning on the prepared tiles, with the model exported for scoring."""

from landuse_kedro.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
