"""MLflow tracking (src/landuse_kedro/tracking.py): the tiny chain's training run is in the project's
local store with the numbers of training_metrics.json, its per-epoch losses, its parameters and
artifacts; the other pipelines record nothing."""

from __future__ import annotations

import json
import os
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
    from tests.conftest import load_catalog

    params = load_catalog(project).load("parameters")
    assert run.data.params["training.epochs"] == str(params["training"]["epochs"])
    assert run.data.params["data_preparation.min_purity"] == str(params["data_preparation"]["min_purity"])
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
