"""Experiment tracking: every run that trains a model is recorded in MLflow.

A small hook over MLflow's client API, rather than kedro-mlflow (which supports Kedro 1.x): that
plugin registers itself in every Kedro session and sets up the tracking store as each context is
created, whatever the pipeline. With MLflow 3 the store is a database (the ``mlruns/`` file store
is refused unless ``MLFLOW_ALLOW_FILE_STORE`` is set), and creating one took 12 s here, in every
session of the test suite. This hook opens the store only for a run that saves
``training_metrics``, and records what the catalog saves, without touching the training nodes:

- parameters: the ``training`` and ``data_preparation`` blocks (flattened, ``training.epochs``);
- metrics: every number of ``training_metrics`` (``accuracy_6``, ``accuracy_3``, ``six_class.*``
  ...) and the per-epoch ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy`` of
  ``training_history`` (step = epoch across phases);
- artifacts: the confusion matrix and learning curve plots, ``scoring_model`` (ONNX), both JSONs.

Where: ``conf/<env>/tracking.yml`` (``tracking_uri``, default a SQLite file in the project), or the
``MLFLOW_TRACKING_URI`` variable, which wins (a tracking server).

Tracking is best effort: a store that fails (``mlflow.db`` locked by another training run or by
``mlflow ui``, a server down) is warned about and the run goes on untracked; no tracking error fails
a run, hides a node's error, or stops another hook's clean-up (pluggy stops at the first hook that
raises, and ``SparkHooks.on_pipeline_error`` stops Spark). After the first failure the hook makes no
further calls in that run: each one would wait MLflow's 20 s SQLite busy timeout again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

TRIGGER = "training_metrics"  # a run that saves it is a training run
PARAM_BLOCKS = ("training", "data_preparation")
FIGURES = {
    "training_confusion_matrix_plot": "training_confusion_matrix.png",
    "learning_curve_plot": "learning_curve.png",
}
EPOCH_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a nested mapping; lists stay leaves."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def numeric_leaves(tree: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a nested mapping (not booleans, not lists): what is logged as metrics."""
    return {
        key: float(value)
        for key, value in flatten(tree)
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def resolve_tracking_uri(uri: str, project_path: Path) -> str:
    """A relative SQLite file or folder is taken from the project root, not the working directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project_path / uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        return (project_path / uri).resolve().as_uri()
    return uri


def shown_uri(uri: str) -> str:
    """The URI for logs: no user, password or query (tokens)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class MlflowHooks:
    """Records each training run in MLflow (see the module docstring)."""

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {}
        self._project_path = Path.cwd()
        self._client: Any = None
        self._run_id: str | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        try:  # conf/<env>/tracking.yml (settings.py: config_patterns["tracking"])
            self._settings = dict(context.config_loader["tracking"] or {})
        except MissingConfigException:
            self._settings = {}
        self._project_path = Path(context.project_path)
        self._run_id = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._run_id = None
        if TRIGGER not in pipeline.all_outputs():
            return
        if not self._settings.get("enabled", True):
            logger.info(
                "MLflow tracking is off (tracking.yml enabled: false): this training run is not recorded"
            )
            return
        try:
            import mlflow  # noqa: F401
        except ImportError:
            logger.warning(
                "MLflow is not installed, so this training run is not recorded: "
                "pip install 'landuse_kedro[local]' (or set enabled: false in conf/<env>/tracking.yml)."
            )
            return
        uri = resolve_tracking_uri(
            os.environ.get("MLFLOW_TRACKING_URI")
            or self._settings.get("tracking_uri", "sqlite:///mlflow.db"),
            self._project_path,
        )
        self._tracking(f"start recording at {shown_uri(uri)}", lambda: self._start(run_params, catalog, uri))

    def _start(self, run_params: dict[str, Any], catalog, uri: str) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        name = self._settings.get("experiment", "landuse_kedro")
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            artifacts = self._settings.get("artifact_location") or (
                (self._project_path / "mlartifacts").resolve().as_uri()
                if uri.startswith(("sqlite:", "file:"))
                else None
            )
            experiment_id = client.create_experiment(name, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        run = client.create_run(
            experiment_id,
            run_name="+".join(pipelines),
            tags={
                "kedro.pipelines": ",".join(pipelines),
                "kedro.env": str(run_params.get("env")),
                "kedro.session_id": str(run_params.get("run_id")),
            },
        )
        self._client, self._run_id = client, run.info.run_id
        values = catalog.load("parameters")  # read here: only training runs pay for it
        params = [
            Param(f"{block}.{key}", json.dumps(value) if isinstance(value, list | dict) else str(value))
            for block in PARAM_BLOCKS
            for key, value in flatten(values.get(block) or {})
        ]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        logger.info(
            "MLflow: recording this run as %s in experiment '%s' at %s", run.info.run_id, name, shown_uri(uri)
        )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if self._run_id is not None:
            self._tracking(f"record {dataset_name}", lambda: self._record(dataset_name, data))

    def _record(self, dataset_name: str, data: Any) -> None:
        client, run_id = self._client, self._run_id
        if dataset_name in ("training_metrics", "training_history"):
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            if dataset_name == "training_metrics":
                metrics = [Metric(key, value, now, 0) for key, value in numeric_leaves(data).items()]
            else:  # one step per epoch
                metrics = [
                    Metric(key, float(record[key]), now, step)
                    for step, record in enumerate(data.get("epochs", []), start=1)
                    for key in EPOCH_METRICS
                    if key in record
                ]
            for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
                client.log_batch(run_id, metrics=metrics[start : start + 1000])
            client.log_dict(run_id, data, f"{dataset_name}.json")
        elif dataset_name in FIGURES:
            client.log_figure(run_id, data, FIGURES[dataset_name])
        elif dataset_name == "scoring_model":
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"scoring_model.{'onnx' if data.format == 'onnx' else 'keras'}"
                path.write_bytes(data.payload)
                client.log_artifact(run_id, str(path))

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end("FINISHED")

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end("FAILED")

    def _end(self, status: str) -> None:
        if self._run_id is not None and self._tracking(
            f"mark the run {status.lower()}", lambda: self._client.set_terminated(self._run_id, status)
        ):
            logger.info("MLflow run %s %s (see it with `mlflow ui`, README)", self._run_id, status.lower())
        self._run_id = None

    def _tracking(self, what: str, call: Callable[[], object]) -> bool:
        """Runs one tracking step; True if it worked. A failure is a warning, never an error, and
        ends tracking for this run (see the module docstring)."""
        try:
            call()
            return True
        except Exception as error:  # whatever the store raises, the run goes on
            left = (
                f"MLflow run {self._run_id} is left incomplete (status RUNNING)"
                if self._run_id
                else "this run is not recorded"
            )
            logger.warning(
                "MLflow: could not %s (%s: %s). Tracking is best effort: the run goes on, its files in "
                "data/ are unaffected, but %s. A locked mlflow.db is usually another training run or "
                "`mlflow ui` writing to it.",
                what,
                type(error).__name__,
                str(error).splitlines()[0][:300] if str(error) else "",
                left,
            )
            self._run_id = None
            return False
