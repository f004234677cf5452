"""acquire: NAIP and NLCD from a STAC API into 01_raw (run on purpose, never in __default__)."""

from landuse_kedro.pipelines.acquire.pipeline import create_pipeline

__all__ = ["create_pipeline"]
