"""spark_scoring through Kedro: on local[2], then on a real standalone cluster (a master and two
workers started from the pyspark package), with the same results."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import Version

from landuse_kedro.datasets.model_file import ModelFileDataset
from landuse_kedro.models.predictor import load_predictor
from landuse_kedro.scoring import decode_image
from tests.helpers import make_project_copy, run_pipeline
from tests.test_scoring import BAD_FILES, CLASSES, image_files, odd_files, tiny_model, write_tiles

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SIZE = 224  # the project's tile size: the base and test environments score 224 x 224 tiles
VALIDATION = Path("data/05_model_input/validation")
# The fixture's folder is a third damaged files on purpose: every one must become its row.
TOLERANT = {"scoring": {"max_failed_fraction": 1.0}}


@pytest.fixture(scope="module")
def scoring_project(tmp_path_factory) -> tuple[Path, dict[str, int], object]:
    """A project copy holding labelled and broken tiles, and an ONNX `scoring_model`."""
    from landuse_kedro.models.onnx_export import keras_to_onnx

    project = make_project_copy(tmp_path_factory.mktemp("scoring") / "project")
    counts = write_tiles(project / VALIDATION, per_class=4, size=SIZE)
    artifact = keras_to_onnx(tiny_model(SIZE))
    ModelFileDataset(
        filepath=str(project / "data/06_models/scoring_model.onnx"), version=Version(None, None)
    ).save(artifact)
    return project, counts, artifact


def _outputs(project: Path) -> tuple[pd.DataFrame, dict]:
    predictions = pd.read_parquet(project / "data/07_model_output/scoring_predictions.parquet")
    metrics = json.loads((project / "data/08_reporting/scoring_metrics.json").read_text())
    return predictions.sort_values("path").reset_index(drop=True), metrics


@pytest.fixture(scope="module")
def local_run(scoring_project):
    """The pipeline on local[2]."""
    project, _, _ = scoring_project
    run_pipeline(project, "spark_scoring", params=TOLERANT)
    return _outputs(project)


def test_every_file_is_counted_and_each_failure_named(scoring_project, local_run):
    project, counts, _ = scoring_project
    predictions, metrics = local_run
    files = image_files(project / VALIDATION)

    assert sorted(predictions["path"]) == files
    assert metrics["counts"] == {
        "input": len(files),
        "scored": len(files) - counts["bad"],
        "failed": counts["bad"],
        "labelled": counts["labelled"],
    }
    reasons = {Path(f["path"]).name: f["error"] for f in metrics["failures"]}
    assert set(reasons) == set(BAD_FILES)
    assert all(BAD_FILES[name] in reason for name, reason in reasons.items())
    assert (project / "data/08_reporting/scoring_confusion_matrix.png").stat().st_size > 0
    # the model from elsewhere is scored as it is (fp32, while the parameters ask for int8), and said so
    assert metrics["model"] == {
        "format": "onnx",
        "precision": "fp32",
        "bytes": len(scoring_project[2].payload),
        "version": metrics["model"]["version"],  # the catalog version it was saved as
        "sha256": hashlib.sha256(scoring_project[2].payload).hexdigest(),
    }
    assert metrics["model"]["version"] and metrics["run_id"]


def test_accuracy_matches_the_model_scored_in_process(scoring_project, local_run):
    project, _, artifact = scoring_project
    _, metrics = local_run
    predict = load_predictor(artifact.format, artifact.payload, threads=1)
    truth, tiles = [], []
    for index, name in enumerate(CLASSES):
        for path in map(Path, image_files(project / VALIDATION / name)):
            if path.name not in BAD_FILES:
                truth.append(index)
                tiles.append(decode_image(path.read_bytes(), SIZE))
    predicted = predict(np.stack(tiles)).argmax(axis=1)

    assert metrics["six_class"]["accuracy"] == pytest.approx(np.mean(predicted == np.array(truth)))
    matrix = np.array(metrics["six_class"]["confusion_matrix"]["matrix"])
    assert matrix.sum() == len(truth) and matrix.shape == (6, 6)
    assert metrics["three_class"]["confusion_matrix"]["labels"] == ["Developed", "Cultivated", "Undeveloped"]


# --- a real cluster -----------------------------------------------------------------------------


def test_standalone_cluster_gives_the_local_results(
    scoring_project, local_run, standalone_cluster, monkeypatch
):
    project, _, _ = scoring_project
    local_predictions, local_metrics = local_run
    monkeypatch.setenv("SPARK_MASTER_URL", standalone_cluster.wait())
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")

    apps = standalone_cluster.applications()
    run_pipeline(project, "spark_scoring", env="standalone", params=TOLERANT)  # replaces the local outputs
    predictions, metrics = _outputs(project)
    assert standalone_cluster.applications() == apps + 1  # the run was the cluster's, not a local fallback

    assert len(predictions) == len(local_predictions)  # a re-run replaced the table, no duplicates
    pd.testing.assert_frame_equal(predictions, local_predictions, check_exact=False, atol=1e-5)
    assert metrics.pop("run_id") != local_metrics["run_id"]  # each run names itself
    assert metrics == {key: value for key, value in local_metrics.items() if key != "run_id"}


def test_a_run_where_every_file_fails_fails_after_writing_its_rows(tmp_path, scoring_project):
    _, _, artifact = scoring_project
    project = make_project_copy(tmp_path / "project")
    folder = project / VALIDATION / "Forest"
    folder.mkdir(parents=True)
    for name, data in odd_files(SIZE).items():
        (folder / name).write_bytes(data)
    ModelFileDataset(
        filepath=str(project / "data/06_models/scoring_model.onnx"), version=Version(None, None)
    ).save(artifact)

    with pytest.raises(Exception, match=r"6 of 6 files failed .*commonest reasons: .*unsupported image mode"):
        run_pipeline(project, "spark_scoring")
    predictions, metrics = _outputs(project)  # written before the run failed
    assert len(predictions) == 6 and predictions["error"].notna().all()
    assert metrics["counts"]["failed"] == 6


def test_after_training_scoring_agrees_with_the_training_evaluation(tiny_chain_project):
    """The whole chain (conftest): spark_scoring on the validation tiles gets the accuracy the
    training pipeline measured for the same model: the export it saved as `scoring_model`, in the
    precision it chose."""
    reports = tiny_chain_project / "data/08_reporting"
    training = json.loads((reports / "training_metrics.json").read_text())
    scoring = json.loads((reports / "scoring_metrics.json").read_text())
    assert scoring["model"]["precision"] == training["scoring_model"]["precision"]

    assert scoring["counts"] == {
        "input": training["validation_tiles"],
        "scored": training["validation_tiles"],
        "failed": 0,
        "labelled": training["validation_tiles"],
    }
    for view in ("six_class", "three_class"):
        assert scoring[view]["accuracy"] == pytest.approx(training["scoring_model"][view]["accuracy"])
        assert scoring[view]["confusion_matrix"] == training["scoring_model"][view]["confusion_matrix"]


# --- a failed or killed re-run never destroys the last good table (issue 19) --------------------


def test_a_failed_or_killed_rerun_keeps_the_last_scoring_table(scoring_project, tmp_path):
    import shutil

    from tests.datasets.test_commit import leftovers
    from tests.test_scoring import tiny_model as make_model

    source, _, _ = scoring_project
    project = tmp_path / "project"
    shutil.copytree(source, project)
    table = project / "data/07_model_output/scoring_predictions.parquet"
    run_pipeline(project, "spark_scoring", params=TOLERANT)
    good = pd.read_parquet(table).sort_values("path", ignore_index=True)
    assert len(good) > 0

    # injected task failure: a model whose output has 5 classes, not 6, fails every task
    import keras

    from landuse_kedro.models.onnx_export import keras_to_onnx

    base = make_model(SIZE)
    five = keras.Model(base.input, keras.layers.Dense(5, activation="softmax")(base.layers[-2].output))
    models = ModelFileDataset(
        filepath=str(project / "data/06_models/scoring_model.onnx"), version=Version(None, None)
    )
    models.save(keras_to_onnx(five))
    with pytest.raises(Exception, match="does not match"):
        run_pipeline(project, "spark_scoring", params=TOLERANT)
    pd.testing.assert_frame_equal(pd.read_parquet(table).sort_values("path", ignore_index=True), good)

    # killed driver: the whole process group (driver, JVM, Python workers) while Spark writes
    command = [
        sys.executable,
        "-m",
        "kedro",
        "run",
        "--pipelines",
        "spark_scoring",
        "--env",
        "test",
        "--params",
        "scoring.max_failed_fraction=1.0",
    ]
    process = subprocess.Popen(
        command, cwd=project, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list(table.parent.glob(f"{table.name}.staging-*")):
        assert process.poll() is None, "the run ended before Spark started writing"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert leftovers(table), "the killed run left no staging table: nothing was tested"
    pd.testing.assert_frame_equal(pd.read_parquet(table).sort_values("path", ignore_index=True), good)

    # the next successful run replaces the table and removes what the killed one left
    ModelFileDataset(
        filepath=str(project / "data/06_models/scoring_model.onnx"), version=Version(None, None)
    ).save(keras_to_onnx(base))
    run_pipeline(project, "spark_scoring", params=TOLERANT)
    assert leftovers(table) == [] and len(pd.read_parquet(table)) == len(good)
