"""development_inference: plan the regions -> read, label and score their tile windows on Spark ->
per-tile classes -> per region: rasters, GeoJSON, maps, gallery, summary; a mosaic of the regions.

Its nodes live in inference.py (plan, score, collect), reporting.py (provenance, agreement, failure
check, candidates, summary), reference.py (the reference sample and the area estimates with their
intervals) and maps.py (rasters, mosaic, maps, gallery)."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.development_inference.inference import (
    classify_tiles,
    plan_regions,
    score_regions,
)
from landuse_kedro.pipelines.development_inference.maps import (
    class_rasters,
    mosaic_class_rasters,
    mosaic_probability_rasters,
    plot_candidate_gallery,
    plot_class_maps,
    probability_rasters,
)
from landuse_kedro.pipelines.development_inference.reference import (
    draw_reference_sample,
    estimate_developed_area,
    plot_reference_gallery,
)
from landuse_kedro.pipelines.development_inference.reporting import (
    check_tile_failures,
    describe_run,
    measure_agreement,
    select_change_candidates,
    summarise_classes,
    tile_tables,
)
from landuse_kedro.pipelines.development_inference.stac import stac_catalog

DEVELOPMENT_INFERENCE = "params:development_inference"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                plan_regions,
                ["naip_scenes", "nlcd_rasters", "params:land_cover", "params:tiling", DEVELOPMENT_INFERENCE],
                "region_plans",
                name="plan_regions",
            ),
            Node(
                score_regions,
                ["region_plans", "scoring_model", "params:land_cover", "params:scoring"],
                "development_predictions",
                name="score_regions",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                classify_tiles,
                ["development_predictions", "region_plans", "params:land_cover", DEVELOPMENT_INFERENCE],
                "development_tile_classes",
                name="classify_tiles",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                describe_run,
                ["run_provenance", "scoring_model"],
                "development_provenance",
                name="describe_run",
            ),
            Node(
                measure_agreement,
                [
                    "development_tile_classes",
                    "development_provenance",
                    DEVELOPMENT_INFERENCE,
                    "region_plans",
                ],
                "development_agreement",
                name="measure_agreement",
            ),
            Node(
                check_tile_failures,
                ["development_agreement", "params:scoring", DEVELOPMENT_INFERENCE],
                None,
                name="check_tile_failures",
            ),
            Node(
                select_change_candidates,
                ["development_tile_classes", "development_provenance", DEVELOPMENT_INFERENCE],
                ["change_candidates_table", "change_candidates"],
                name="select_change_candidates",
            ),
            Node(
                tile_tables,
                ["development_tile_classes", DEVELOPMENT_INFERENCE],
                "tile_tables",
                name="tile_tables",
            ),
            Node(
                draw_reference_sample,
                [
                    "development_tile_classes",
                    "change_candidates_table",
                    "development_provenance",
                    "params:land_cover",
                    DEVELOPMENT_INFERENCE,
                ],
                ["reference_sample", "reference_sample_geojson"],
                name="draw_reference_sample",
            ),
            Node(
                plot_reference_gallery,
                ["reference_sample", "development_tile_classes", "region_plans", DEVELOPMENT_INFERENCE],
                "reference_sample_gallery",
                name="plot_reference_gallery",
            ),
            Node(
                estimate_developed_area,
                [
                    "reference_sample",
                    "reference_labels",
                    "sample_change_truth",
                    "development_tile_classes",
                    "params:land_cover",
                    DEVELOPMENT_INFERENCE,
                ],
                ["area_estimates", "area_estimate_figures"],
                name="estimate_developed_area",
            ),
            Node(
                class_rasters,
                ["development_tile_classes", "region_plans", "development_provenance", DEVELOPMENT_INFERENCE],
                "region_class_rasters",
                name="class_rasters",
            ),
            Node(
                mosaic_class_rasters,
                [
                    "region_class_rasters",
                    "development_provenance",
                    "params:land_cover",
                    DEVELOPMENT_INFERENCE,
                ],
                "class_raster_mosaics",
                name="mosaic_class_rasters",
            ),
            Node(
                probability_rasters,
                [
                    "development_tile_classes",
                    "region_plans",
                    "development_provenance",
                    "params:land_cover",
                    DEVELOPMENT_INFERENCE,
                ],
                "region_probability_rasters",
                name="probability_rasters",
            ),
            Node(
                mosaic_probability_rasters,
                ["region_probability_rasters", "development_provenance", DEVELOPMENT_INFERENCE],
                "probability_raster_mosaics",
                name="mosaic_probability_rasters",
            ),
            Node(
                plot_class_maps,
                ["development_tile_classes", "params:land_cover", DEVELOPMENT_INFERENCE],
                "development_maps",
                name="plot_class_maps",
            ),
            Node(
                plot_candidate_gallery,
                [
                    "change_candidates_table",
                    "development_tile_classes",
                    "region_plans",
                    DEVELOPMENT_INFERENCE,
                ],
                "change_candidate_gallery",
                name="plot_candidate_gallery",
            ),
            Node(
                summarise_classes,
                ["development_tile_classes", "params:land_cover", DEVELOPMENT_INFERENCE],
                "development_summary",
                name="summarise_classes",
            ),
            Node(
                stac_catalog,
                [
                    "output_files",
                    "region_class_rasters",
                    "region_probability_rasters",
                    "class_raster_mosaics",
                    "probability_raster_mosaics",
                    "change_candidates",
                    "development_tile_classes",
                    "development_provenance",
                    "params:land_cover",
                    DEVELOPMENT_INFERENCE,
                ],
                "stac_catalog",
                name="stac_catalog",
            ),
        ],
        tags="development_inference",
    )
