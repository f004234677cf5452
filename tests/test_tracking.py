"""MLflow tracking (src/landuse_kedro/tracking.py): the tiny chain's training run is in the project's
local store with the numbers of training_metrics.json, its per-epoch losses, its parameters and
artifacts; the other pipelines record nothing."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from landuse_kedro.tracking import numeric_leaves, resolve_tracking_uri, shown_uri


@pytest.fixture(scope="module")
def recorded(tiny_chain_project):
    from mlflow.tracking import MlflowClient

    store = tiny_chain_project / "mlflow.db"
    assert store.exists(), "no MLflow store in the project after the chain ran"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("landuse_kedro")
    runs = client.search_runs([experiment.experiment_id])
    return tiny_chain_project, client, runs


def test_only_the_training_run_is_recorded(recorded):
    _, _, runs = recorded
    assert [run.data.tags["kedro.pipelines"] for run in runs] == ["training"]  # not sample_scene, ...
    assert runs[0].info.status == "FINISHED"


def test_recorded_metrics_equal_training_metrics_json(recorded):
    project, client, (run, *_) = recorded
    expected = numeric_leaves(json.loads((project / "data/08_reporting/training_metrics.json").read_text()))
    assert {"accuracy_6", "accuracy_3", "six_class.accuracy", "three_class.accuracy"} <= set(expected)
    epochs = json.loads((project / "data/08_reporting/training_history.json").read_text())["epochs"]
    losses = {key: [record[key] for record in epochs] for key in ("loss", "val_loss")}
    recorded_metrics = {
        key: value
        for key, value in run.data.metrics.items()
        if key not in ("loss", "val_loss", "accuracy", "val_accuracy")
    }
    assert recorded_metrics == expected
    for key, values in losses.items():
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, len(epochs) + 1))
        assert [m.value for m in history] == pytest.approx(values, rel=0, abs=0)


def test_parameters_and_artifacts_are_recorded(recorded, tmp_path):
    project, client, (run, *_) = recorded
    from tests.helpers import load_catalog

    params = load_catalog(project).load("parameters")
    assert run.data.params["training.epochs"] == str(params["training"]["epochs"])
    assert run.data.params["data_preparation.min_label_share"] == str(
        params["data_preparation"]["min_label_share"]
    )
    assert run.data.params["data_preparation.max_tiles_per_class"] == "8"  # the test environment's value
    artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {
        "training_confusion_matrix.png",
        "learning_curve.png",
        "scoring_model.onnx",
        "training_metrics.json",
        "training_history.json",
    } <= artifacts
    logged = Path(client.download_artifacts(run.info.run_id, "scoring_model.onnx", str(tmp_path)))
    assert str((project / "mlartifacts").resolve()) in run.info.artifact_uri  # the store is in the project
    cwd = Path.cwd()
    os.chdir(project)
    try:
        model = load_catalog(project).load("scoring_model")
    finally:
        os.chdir(cwd)
    assert model.format == "onnx" and logged.read_bytes() == model.payload


def test_tracking_uri_is_the_projects_and_never_shows_secrets(tmp_path):
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("https://mlflow.example/x", tmp_path) == "https://mlflow.example/x"
    shown = shown_uri("https://user:s3cret@mlflow.example:5000/api?token=abc")
    assert shown == "https://mlflow.example:5000/api"
    assert "s3cret" not in shown and "abc" not in shown


# ------------------------------------------------------------------ tracking is best effort (issue 28)


@contextlib.contextmanager
def locked(store: Path):
    """The store as another writer holds it (a second training run, `mlflow ui`): an exclusive
    SQLite lock, so MLflow's every call waits its 20 s busy timeout and fails."""
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_store_leaves_a_training_run_successful_with_a_warning(tiny_chain_project, tmp_path, caplog):
    from tests.helpers import make_project_copy, run_pipeline

    project = make_project_copy(tmp_path / "project")
    for layer in ("05_model_input", "02_intermediate", "03_primary", "04_feature"):  # the chain's tiles
        shutil.copytree(tiny_chain_project / "data" / layer, project / "data" / layer, dirs_exist_ok=True)
    shutil.copy(tiny_chain_project / "mlflow.db", project / "mlflow.db")
    with locked(project / "mlflow.db"), caplog.at_level(logging.WARNING, logger="landuse_kedro.tracking"):
        run_pipeline(project, "training")
    metrics = json.loads((project / "data/08_reporting/training_metrics.json").read_text())
    assert "accuracy_6" in metrics and list((project / "data/06_models/scoring_model.onnx").iterdir())
    warnings = [r.getMessage() for r in caplog.records if r.name == "landuse_kedro.tracking"]
    assert len(warnings) == 1 and "could not start recording" in warnings[0], warnings  # one 20 s wait
    assert "database is locked" in warnings[0] and "this run is not recorded" in warnings[0]


def test_a_node_error_is_shown_and_spark_stopped_when_the_store_fails_at_the_end(
    tiny_chain_project, tmp_path, monkeypatch, caplog
):
    """The store is locked after the MLflow run started; a Spark node then fails. The node's own
    error reaches the user, not MLflow's, and SparkHooks (after MlflowHooks in pluggy's order)
    still stops the session it started."""
    from kedro.io import DatasetError
    from pyspark import SparkContext

    from landuse_kedro import hooks
    from landuse_kedro.hooks import SparkHooks
    from landuse_kedro.settings import HOOKS
    from landuse_kedro.spark import spark_is_running, start_spark
    from landuse_kedro.tracking import MlflowHooks
    from tests.helpers import make_project_copy, run_pipeline

    project = make_project_copy(tmp_path / "project")
    shutil.copytree(
        tiny_chain_project / "data/05_model_input", project / "data/05_model_input", dirs_exist_ok=True
    )
    store = project / "mlflow.db"
    shutil.copy(tiny_chain_project / "mlflow.db", store)
    lock = contextlib.ExitStack()
    original = MlflowHooks.before_pipeline_run

    @functools.wraps(original)
    def before_pipeline_run(self, run_params, pipeline, catalog):
        original(self, run_params, pipeline, catalog)
        assert self._run_id is not None  # the run started before the lock
        lock.enter_context(locked(store))

    monkeypatch.setattr(MlflowHooks, "before_pipeline_run", before_pipeline_run)
    (spark_hooks,) = [hook for hook in HOOKS if isinstance(hook, SparkHooks)]
    sessions = []
    monkeypatch.setattr(hooks, "start_spark", lambda conf: sessions.append(start_spark(conf)) or sessions[-1])
    was_running = spark_is_running()
    # evaluate_classifier saves training_metrics (a training run for MLflow); score_image_files (a Spark
    # node, before it by name) starts Spark, then fails to load the scoring_model no run has trained
    nodes = ["assemble_tile_set", "score_image_files", "evaluate_classifier"]
    with lock, caplog.at_level(logging.WARNING, logger="landuse_kedro.tracking"):
        with pytest.raises(DatasetError, match="scoring_model"):
            run_pipeline(project, node_names=nodes)
    assert sessions, "the Spark node did not start Spark: the test would see nothing"
    assert spark_hooks._session is None
    if not was_running:
        assert SparkContext._active_spark_context is None  # stopped, not only forgotten
    assert any("could not mark the run failed" in r.getMessage() for r in caplog.records)
