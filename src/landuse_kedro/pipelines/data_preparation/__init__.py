"""NAIP scenes + NLCD land cover -> labelled, balanced, region-split PNG tiles with a manifest."""

from landuse_kedro.pipelines.data_preparation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
