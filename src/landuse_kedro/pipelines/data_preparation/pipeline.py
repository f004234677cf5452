"""data_preparation: plan the scenes, label every tile (Spark), choose a balanced region-split
set, write it (Spark), report, and fail when too many windows were unreadable."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.data_preparation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.plan_scenes,
                inputs=["naip_scenes", "nlcd_rasters", "params:land_cover", "params:tiling"],
                outputs="scene_plans",
                name="plan_scenes",
            ),
            Node(
                nodes.label_tiles,
                inputs=["scene_plans", "params:data_preparation"],
                outputs="labelled_tiles",
                name="label_tiles",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                nodes.select_tiles,
                inputs=["labelled_tiles", "params:land_cover", "params:data_preparation"],
                outputs="tile_selection",
                name="select_tiles",
            ),
            Node(
                nodes.export_tiles,
                inputs=["tile_selection", "scene_plans"],
                outputs="model_input_tiles",
                name="export_tiles",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                nodes.write_manifest,
                inputs=["tile_selection", "model_input_tiles", "labelled_tiles"],
                # saved after the tiles: a run that fails before leaves the last run's three outputs
                outputs=["tile_manifest", "tile_candidates"],
                name="write_manifest",
            ),
            Node(
                nodes.summarise_preparation,
                inputs=[
                    "tile_candidates",
                    "tile_manifest",
                    "params:land_cover",
                    "params:tiling",
                    "params:data_preparation",
                    "scene_plans",
                ],
                outputs="preparation_report",
                name="summarise_preparation",
            ),
            Node(
                nodes.plot_preparation_report,
                inputs="preparation_report",
                outputs="preparation_report_plot",
                name="plot_preparation_report",
            ),
            Node(
                nodes.check_unreadable_windows,
                inputs=["tile_candidates", "preparation_report", "params:data_preparation"],
                outputs=None,
                name="check_unreadable_windows",
            ),
        ],
        tags="data_preparation",
    )
