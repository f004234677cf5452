"""sample_scene: the generated NAIP + NLCD stand-in that is the project's default data."""

from landuse_kedro.pipelines.sample_scene.pipeline import create_pipeline

__all__ = ["create_pipeline"]
