"""spark_scoring: image files + scoring model -> predictions table -> metrics and confusion matrices."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.spark_scoring import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.score_image_files,
                inputs=["scoring_images", "scoring_model", "params:land_cover", "params:scoring",
                        "params:spark_scoring.partitions_per_core"],
                outputs=["scoring_predictions", "scored_image_list"],
                name="score_image_files",
                tags=["spark", "spark_scoring"],
            ),
            Node(
                nodes.summarise_scoring,
                inputs=["scoring_predictions", "scored_image_list", "params:land_cover", "scoring_model"],
                outputs="scoring_metrics",
                name="summarise_scoring",
                tags=["spark", "spark_scoring"],
            ),
            Node(
                nodes.check_scoring_failures,
                inputs=["scoring_metrics", "params:scoring"],
                outputs=None,
                name="check_scoring_failures",
                tags=["spark_scoring"],
            ),
            Node(
                nodes.plot_scoring_confusion_matrices,
                inputs="scoring_metrics",
                outputs="scoring_confusion_matrix_plot",
                name="plot_scoring_confusion_matrices",
                tags=["spark_scoring", "reporting"],
            ),
        ]
    )
