"""training: tile files -> backbone features on the Spark workers (``tile_features``, reused across
runs) -> Keras model (+ fp32 and int8 scoring exports) -> metrics and figures; the evaluation picks
which export becomes ``scoring_model``."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.training import nodes

PARAMS = ["params:land_cover", "params:training", "params:scoring"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.assemble_tile_set,
                ["training_tile_files", "tile_manifest", *PARAMS],
                "training_tile_set",
                name="assemble_tile_set",
            ),
            Node(
                nodes.extract_tile_features,
                ["training_tile_set", "training_tile_files", "previous_tile_features", *PARAMS],
                ["tile_features", "training_tile_keys"],
                name="extract_tile_features",
                tags="spark",
            ),
            Node(
                nodes.train_classifier,
                ["training_tile_keys", "tile_features", "training_tile_files", *PARAMS],
                ["landuse_classifier", "training_history"],
                name="train_classifier",
                tags="spark",  # streams the head's features from tile_features
            ),
            Node(
                nodes.export_scoring_model,
                ["landuse_classifier", "params:scoring"],
                "scoring_model_fp32",
                name="export_scoring_model",
            ),
            Node(
                nodes.quantize_scoring_model,
                [
                    "scoring_model_fp32",
                    "training_tile_set",
                    "training_tile_files",
                    "params:training",
                    "params:scoring",
                ],
                "scoring_model_int8",
                name="quantize_scoring_model",
            ),
            Node(
                nodes.evaluate_classifier,
                [
                    "landuse_classifier",
                    "training_tile_set",
                    "training_tile_files",
                    "scoring_model_fp32",
                    "scoring_model_int8",
                    "training_history",
                    *PARAMS,
                ],
                "training_metrics",
                name="evaluate_classifier",
            ),
            Node(
                nodes.select_scoring_model,
                ["scoring_model_fp32", "scoring_model_int8", "training_metrics", "previous_scoring_model"],
                "scoring_model",
                name="select_scoring_model",
            ),
            Node(
                nodes.plot_confusion_matrices,
                "training_metrics",
                "training_confusion_matrix_plot",
                name="plot_confusion_matrices",
            ),
            Node(
                nodes.plot_learning_curves,
                "training_history",
                "learning_curve_plot",
                name="plot_learning_curves",
            ),
        ],
        tags="training",  # the feature nodes are tagged spark: SparkHooks starts the session for them
    )
