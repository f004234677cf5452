"""acquire: search NAIP on a STAC API, mosaic each region-year onto one grid, cut NLCD windows.

Not part of ``__default__`` (see pipeline_registry.py): it writes 01_raw and needs the network,
so it runs only when asked: ``kedro run --pipelines acquire --params ...``.
"""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.acquire import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.search_naip, ["params:acquire", "naip_present"], "naip_items", name="search_naip"),
            Node(
                nodes.mosaic_naip,
                ["naip_items", "params:acquire"],
                ["naip_scenes", "naip_refused"],
                name="mosaic_naip",
            ),
            Node(nodes.read_nlcd, ["params:acquire", "nlcd_present"], "nlcd_rasters", name="read_nlcd"),
            Node(
                nodes.summarise_acquisition,
                ["naip_items", "naip_present", "naip_refused", "params:acquire"],
                "acquire_report",
                name="summarise_acquisition",
            ),
        ],
        tags="acquire",
    )
