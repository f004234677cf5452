"""acquire: search NAIP on a STAC API, mosaic each region-year onto one grid, cut NLCD windows.

Not part of ``__default__`` (see pipeline_registry.py): it writes 01_raw and needs the network,
so it runs only when asked: ``kedro run --pipelines acquire --params ...``.
"""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.acquire.mosaic import mosaic_naip
from landuse_kedro.pipelines.acquire.nlcd import read_nlcd
from landuse_kedro.pipelines.acquire.report import summarise_acquisition
from landuse_kedro.pipelines.acquire.stac import search_naip


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(search_naip, ["params:acquire", "naip_present"], "naip_items", name="search_naip"),
            Node(
                mosaic_naip,
                ["naip_items", "params:acquire"],
                ["naip_scenes", "naip_refused"],
                name="mosaic_naip",
            ),
            Node(read_nlcd, ["params:acquire", "nlcd_present"], "nlcd_rasters", name="read_nlcd"),
            Node(
                summarise_acquisition,
                ["naip_items", "naip_present", "naip_refused", "params:acquire"],
                "acquire_report",
                name="summarise_acquisition",
            ),
        ],
        tags="acquire",
    )
