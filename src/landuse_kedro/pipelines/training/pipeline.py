"""training: tiles -> Keras model (+ fp32 and int8 scoring exports) -> metrics and figures; the
evaluation picks which export becomes ``scoring_model``."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.training import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.assemble_tile_set,
                inputs=["model_input_tiles", "tile_manifest", "params:land_cover", "params:training",
                        "params:scoring"],
                outputs="training_tile_set",
                name="assemble_tile_set",
                tags=["training", "data"],
            ),
            Node(
                nodes.train_classifier,
                inputs=["training_tile_set", "params:land_cover", "params:training", "params:scoring"],
                outputs=["landuse_classifier", "training_history"],
                name="train_classifier",
                tags=["training", "model"],
            ),
            Node(
                nodes.export_scoring_model,
                inputs=["landuse_classifier", "params:scoring"],
                outputs="scoring_model_fp32",
                name="export_scoring_model",
                tags=["training", "model"],
            ),
            Node(
                nodes.quantize_scoring_model,
                inputs=["scoring_model_fp32", "training_tile_set", "params:training"],
                outputs="scoring_model_int8",
                name="quantize_scoring_model",
                tags=["training", "model"],
            ),
            Node(
                nodes.evaluate_classifier,
                inputs=["landuse_classifier", "training_tile_set", "scoring_model_fp32", "scoring_model_int8",
                        "training_history", "params:land_cover", "params:training", "params:scoring"],
                outputs="training_metrics",
                name="evaluate_classifier",
                tags=["training", "evaluation"],
            ),
            Node(
                nodes.select_scoring_model,
                inputs=["scoring_model_fp32", "scoring_model_int8", "training_metrics"],
                outputs="scoring_model",
                name="select_scoring_model",
                tags=["training", "model"],
            ),
            Node(
                nodes.plot_confusion_matrices,
                inputs="training_metrics",
                outputs="training_confusion_matrix_plot",
                name="plot_confusion_matrices",
                tags=["training", "evaluation", "reporting"],
            ),
            Node(
                nodes.plot_learning_curves,
                inputs="training_history",
                outputs="learning_curve_plot",
                name="plot_learning_curves",
                tags=["training", "evaluation", "reporting"],
            ),
        ]
    )
