"""spark_scoring: image files + scoring model -> predictions table -> metrics and confusion matrices."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.spark_scoring import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.score_image_files,
                [
                    "scoring_images",
                    "scoring_model",
                    "params:land_cover",
                    "params:scoring",
                    "params:spark_scoring.partitions_per_core",
                ],
                ["scoring_predictions", "scored_image_list"],
                name="score_image_files",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                nodes.summarise_scoring,
                [
                    "scoring_predictions",
                    "scored_image_list",
                    "params:land_cover",
                    "scoring_model",
                    "run_provenance",
                ],
                "scoring_metrics",
                name="summarise_scoring",
                tags="spark",  # SparkHooks start the session before a node with this tag
            ),
            Node(
                nodes.check_scoring_failures,
                ["scoring_metrics", "params:scoring"],
                None,
                name="check_scoring_failures",
            ),
            Node(
                nodes.plot_scoring_confusion_matrices,
                "scoring_metrics",
                "scoring_confusion_matrix_plot",
                name="plot_scoring_confusion_matrices",
            ),
        ],
        tags="spark_scoring",
    )
