"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Generates stand-in rasters; run on purpose (`make run` does it when data/01_raw is empty),
# never as part of the default run, so it can never touch a user's data or a cluster environment.
SAMPLE_SCENE = "sample_scene"
# Fetches real NAIP + NLCD from a STAC API into data/01_raw: network, on purpose only (README).
ACQUIRE = "acquire"


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipe for name, pipe in pipelines.items() if name not in (SAMPLE_SCENE, ACQUIRE)), Pipeline([])
    )
    return pipelines
