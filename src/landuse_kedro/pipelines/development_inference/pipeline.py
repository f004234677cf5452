"""development_inference: plan the regions -> read, label and score their tile windows on Spark ->
per-tile classes -> per region: rasters, GeoJSON, maps, gallery, summary; a mosaic of the regions."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.development_inference import nodes

OPTIONS = "params:development_inference"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.plan_regions,
                inputs=["naip_scenes", "nlcd_rasters", "params:land_cover", "params:tiling", OPTIONS],
                outputs="region_plans",
                name="plan_regions",
                tags=["development_inference", "tiling"],
            ),
            Node(
                nodes.score_regions,
                inputs=["region_plans", "scoring_model", "params:land_cover", "params:scoring"],
                outputs="development_predictions",
                name="score_regions",
                tags=["development_inference", "spark", "scoring"],
            ),
            Node(
                nodes.classify_tiles,
                inputs=["development_predictions", "region_plans", "params:land_cover", OPTIONS],
                outputs="development_tile_classes",
                name="classify_region_tiles",
                tags=["development_inference", "spark"],
            ),
            Node(
                nodes.measure_agreement,
                inputs=["development_tile_classes", "params:land_cover", OPTIONS],
                outputs="development_agreement",
                name="measure_agreement_with_older_labels",
                tags=["development_inference", "reporting"],
            ),
            Node(
                nodes.check_tile_failures,
                inputs=["development_agreement", "params:scoring", OPTIONS],
                outputs=None,
                name="check_tile_failures",
                tags=["development_inference"],
            ),
            Node(
                nodes.select_change_candidates,
                inputs=["development_tile_classes", "params:land_cover", OPTIONS],
                outputs=["change_candidates_table", "change_candidates"],
                name="select_change_candidates",
                tags=["development_inference"],
            ),
            Node(
                nodes.class_rasters,
                inputs=["development_tile_classes", "region_plans", OPTIONS],
                outputs="region_class_rasters",
                name="write_class_rasters",
                tags=["development_inference", "maps"],
            ),
            Node(
                nodes.mosaic_class_rasters,
                inputs=["region_class_rasters", "params:land_cover", OPTIONS],
                outputs="class_raster_mosaics",
                name="mosaic_class_rasters",
                tags=["development_inference", "maps"],
            ),
            Node(
                nodes.plot_class_maps,
                inputs=["development_tile_classes", "params:land_cover", OPTIONS],
                outputs="development_maps",
                name="plot_development_maps",
                tags=["development_inference", "maps", "reporting"],
            ),
            Node(
                nodes.plot_candidate_gallery,
                inputs=["change_candidates_table", "development_tile_classes", "region_plans", OPTIONS],
                outputs="change_candidate_gallery",
                name="plot_change_candidate_gallery",
                tags=["development_inference", "reporting"],
            ),
            Node(
                nodes.summarise_classes,
                inputs=["development_tile_classes", "params:land_cover", OPTIONS],
                outputs="development_summary",
                name="summarise_region_classes",
                tags=["development_inference", "reporting"],
            ),
        ]
    )
