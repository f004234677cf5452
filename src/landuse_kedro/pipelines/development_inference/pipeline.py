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
                ["naip_scenes", "nlcd_rasters", "params:land_cover", "params:tiling", OPTIONS],
                "region_plans",
                name="plan_regions",
            ),
            Node(
                nodes.score_regions,
                ["region_plans", "scoring_model", "params:land_cover", "params:scoring"],
                "development_predictions",
                name="score_regions",
                tags="spark",
            ),
            Node(
                nodes.classify_tiles,
                ["development_predictions", "region_plans", "params:land_cover", OPTIONS],
                "development_tile_classes",
                name="classify_tiles",
                tags="spark",
            ),
            Node(
                nodes.describe_run,
                ["run_provenance", "scoring_model"],
                "development_provenance",
                name="describe_run",
            ),
            Node(
                nodes.measure_agreement,
                [
                    "development_tile_classes",
                    "development_provenance",
                    "params:land_cover",
                    OPTIONS,
                    "region_plans",
                ],
                "development_agreement",
                name="measure_agreement",
            ),
            Node(
                nodes.check_tile_failures,
                ["development_agreement", "params:scoring", OPTIONS],
                None,
                name="check_tile_failures",
            ),
            Node(
                nodes.select_change_candidates,
                ["development_tile_classes", "development_provenance", OPTIONS],
                ["change_candidates_table", "change_candidates"],
                name="select_change_candidates",
            ),
            Node(
                nodes.class_rasters,
                ["development_tile_classes", "region_plans", "development_provenance", OPTIONS],
                "region_class_rasters",
                name="class_rasters",
            ),
            Node(
                nodes.mosaic_class_rasters,
                ["region_class_rasters", "development_provenance", "params:land_cover", OPTIONS],
                "class_raster_mosaics",
                name="mosaic_class_rasters",
            ),
            Node(
                nodes.plot_class_maps,
                ["development_tile_classes", "params:land_cover", OPTIONS],
                "development_maps",
                name="plot_class_maps",
            ),
            Node(
                nodes.plot_candidate_gallery,
                ["change_candidates_table", "development_tile_classes", "region_plans", OPTIONS],
                "change_candidate_gallery",
                name="plot_candidate_gallery",
            ),
            Node(
                nodes.summarise_classes,
                ["development_tile_classes", "params:land_cover", OPTIONS],
                "development_summary",
                name="summarise_classes",
            ),
        ],
        tags="development_inference",  # the spark tag: SparkHooks start the session before those nodes
    )
