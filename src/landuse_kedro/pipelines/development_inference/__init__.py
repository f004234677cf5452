"""Map a region's land use from its newer imagery and find newly developed land."""

from landuse_kedro.pipelines.development_inference.pipeline import create_pipeline

__all__ = ["create_pipeline"]
