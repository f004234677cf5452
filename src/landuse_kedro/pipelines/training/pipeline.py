"""training: tile files -> backbone features on the Spark workers (``tile_features``, reused across
runs) -> Keras model (+ fp32 and int8 scoring exports) -> metrics and figures; the evaluation picks
which export becomes ``scoring_model``."""

from kedro.pipeline import Node, Pipeline

from landuse_kedro.pipelines.training.evaluation import (
    evaluate_classifier,
    plot_confusion_matrices,
    plot_learning_curves,
    select_scoring_model,
)
from landuse_kedro.pipelines.training.exports import export_scoring_model, quantize_scoring_model
from landuse_kedro.pipelines.training.features import extract_tile_features
from landuse_kedro.pipelines.training.fitting import train_classifier
from landuse_kedro.pipelines.training.inputs import assemble_tile_set

PARAMS = ["params:land_cover", "params:training", "params:scoring"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                assemble_tile_set,
                ["training_tile_files", "tile_manifest", *PARAMS],
                "training_tile_set",
                name="assemble_tile_set",
            ),
            Node(
                extract_tile_features,
                ["training_tile_set", "training_tile_files", "previous_tile_features", *PARAMS],
                ["tile_features@spark", "training_tile_keys"],
                name="extract_tile_features",
                tags="spark",  # SparkHooks starts the session for it: the workers compute the features
            ),
            Node(
                train_classifier,
                ["training_tile_keys", "tile_features@arrow", "training_tile_files", *PARAMS],
                ["landuse_classifier", "training_history"],
                name="train_classifier",  # reads the features with Arrow: no Spark job
            ),
            Node(
                export_scoring_model,
                ["landuse_classifier", "params:scoring"],
                "scoring_model_fp32",
                name="export_scoring_model",
            ),
            Node(
                quantize_scoring_model,
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
                evaluate_classifier,
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
                select_scoring_model,
                ["scoring_model_fp32", "scoring_model_int8", "training_metrics", "previous_scoring_model"],
                "scoring_model",
                name="select_scoring_model",
            ),
            Node(
                plot_confusion_matrices,
                "training_metrics",
                "training_confusion_matrix_plot",
                name="plot_confusion_matrices",
            ),
            Node(
                plot_learning_curves,
                "training_history",
                "learning_curve_plot",
                name="plot_learning_curves",
            ),
        ],
        tags="training",
    )
