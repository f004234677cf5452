"""sample_scene: draw the land cover of a few regions, render their imagery in two years, derive NLCD.

Not part of ``__default__`` (see pipeline_registry.py): it writes data/01_raw, so it only runs when asked
(``make run`` asks when data/01_raw/naip holds no GeoTIFF).
"""

from kedro.pipeline import Pipeline, node

from landuse_kedro.pipelines.sample_scene.nodes import (
    generate_land_cover,
    make_change_truth,
    make_nlcd_rasters,
    render_naip_scenes,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(generate_land_cover, "params:sample_scene", "sample_land_cover",
                 name="generate_sample_land_cover", tags=["sample_scene"]),
            node(make_nlcd_rasters, ["sample_land_cover", "params:sample_scene"], "nlcd_rasters",
                 name="derive_sample_nlcd", tags=["sample_scene"]),
            node(render_naip_scenes, ["sample_land_cover", "params:sample_scene"], "naip_scenes",
                 name="render_sample_naip", tags=["sample_scene"]),
            node(make_change_truth, "sample_land_cover", "sample_change_truth",
                 name="sample_change_truth", tags=["sample_scene"]),
        ]
    )
