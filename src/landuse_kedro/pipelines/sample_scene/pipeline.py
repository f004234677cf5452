"""sample_scene: draw the land cover of a few regions, render their imagery in two years, derive NLCD.

Not part of ``__default__`` (see pipeline_registry.py): it writes data/01_raw, so it only runs when asked
(``make run`` asks when data/01_raw holds no NAIP and no NLCD GeoTIFF), and refuses to write when either
folder already holds one (refuse_existing_raw_data): it never replaces a user's rasters.
"""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.sample_scene import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.refuse_existing_raw_data,
                ["params:sample_scene", "naip_present", "nlcd_present"],
                "sample_scene_checked",
                name="refuse_existing_raw_data",
            ),
            Node(
                nodes.generate_land_cover,
                "sample_scene_checked",
                "sample_land_cover",
                name="generate_land_cover",
            ),
            Node(
                nodes.make_nlcd_rasters,
                ["sample_land_cover", "params:sample_scene"],
                "nlcd_rasters",
                name="make_nlcd_rasters",
            ),
            Node(
                nodes.render_naip_scenes,
                ["sample_land_cover", "params:sample_scene"],
                "naip_scenes",
                name="render_naip_scenes",
            ),
            Node(
                nodes.make_change_truth, "sample_land_cover", "sample_change_truth", name="make_change_truth"
            ),
        ],
        tags="sample_scene",
    )
