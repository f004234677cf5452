"""The Spark session comes from configuration (``conf/<env>/spark.yml``), never from a node."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

from landuse_kedro import __version__
from landuse_kedro.datasets.commit import find_leftovers
from landuse_kedro.parameters import check_renamed, conform
from landuse_kedro.spark import register_python_data_sources, spark_is_running, start_spark
from landuse_kedro.storage import StorageConfigError, check_container, check_credentials, is_remote

logger = logging.getLogger(__name__)

SPARK_TAG = "spark"


class SparkHooks:
    """Start one SparkSession when the first node tagged ``spark`` is about to load its inputs or
    run, and stop it after the run.

    Starting Spark costs seconds and a JVM, so pipelines without a Spark node (training) never
    pay for it, and the nodes before the first Spark node (plans that check their inputs) fail
    fast, before any JVM starts. A session that was already running (a notebook's, a test's) is
    reused and left running: stopping it would break its owner's later work.
    """

    def __init__(self) -> None:
        self._spark_conf: dict[str, Any] = {}
        self._session = None
        self._owns_session = False

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            self._spark_conf = dict(context.config_loader["spark"] or {})
        except KeyError:
            self._spark_conf = {}

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node: Node) -> None:
        self._start_for(node)  # a Spark node's inputs may be Spark tables

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._start_for(node)

    def _start_for(self, node: Node) -> None:
        if self._session is None and SPARK_TAG in node.tags:
            self._owns_session = not spark_is_running()
            self._session = start_spark(self._spark_conf)
            register_python_data_sources(self._session)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._stop()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._session is None:
            return
        if self._owns_session:
            self._session.stop()
        else:
            logger.info(
                "Leaving the Spark session that existed before the run running (the hook did not start it)"
            )
        self._session, self._owns_session = None, False


class ParameterHooks:
    """Check runtime parameters (``--params``) against the configuration files, before any node runs
    (and so before Spark starts).

    A parameter under a name it had before a rename (``parameters.RENAMED``), in the files or on
    the command line, is refused with its new name.

    A key that names no parameter is refused: without its pipeline's prefix (``regions=[essex]``
    for ``development_inference.regions``) it would be ignored, and the run would quietly use the
    default. A value of the wrong type for the parameter it overrides (list, number, boolean,
    string, group) is refused with the key, what was given and an example. Values of list
    parameters are made lists (:func:`landuse_kedro.parameters.as_list`: a YAML list, one name, or
    names separated by spaces), their items numbers where the configured list holds numbers, so
    every node gets a list whichever form the user typed.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        runtime = dict(getattr(loader, "runtime_params", None) or {})
        check_renamed(_dotted(runtime), "--params")
        check_renamed(_dotted(loader["parameters"]), f"conf/{loader.env or loader.default_run_env}")
        if not runtime:
            return
        from kedro.config import OmegaConfigLoader

        files = OmegaConfigLoader(  # the same configuration without the runtime parameters
            conf_source=loader.conf_source,
            env=loader.env,
            base_env=loader.base_env,
            default_run_env=loader.default_run_env,
            config_patterns=loader.config_patterns,
            merge_strategy=loader.merge_strategy,
        )["parameters"]
        known = set(_dotted(files))
        open_maps = _open_mappings(files)  # `{}` in the files: the user names the keys (acquire.regions)
        unknown = [
            key
            for key in _dotted(runtime)
            if key not in known
            and not any(k.startswith(f"{key}.") for k in known)
            and not any(key.startswith(f"{m}.") for m in open_maps)
        ]
        if unknown:
            hints = []
            for key in unknown:
                leaf = key.rsplit(".", 1)[-1]
                near = sorted(k for k in known if k == leaf or k.endswith(f".{leaf}"))
                hints.append(f"'{key}'" + (f" (did you mean {' or '.join(near)}?)" if near else ""))
            raise ValueError(
                f"Unknown runtime parameter(s) {', '.join(hints)}: no parameter of "
                f"environment '{loader.env or loader.default_run_env}' has that name, so it "
                "would be ignored. Parameters are <pipeline>.<name>, e.g. "
                "development_inference.regions=[essex]."
            )
        loader.runtime_params = {key: conform(key, value, files.get(key)) for key, value in runtime.items()}


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key path of a nested mapping, leaves and branches: a.b.c -> a, a.b, a.b.c."""
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict) and value:
            keys.extend(_dotted(value, f"{path}."))
    return keys


def _open_mappings(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Key paths whose configured value is an empty mapping: any key below them is the user's."""
    found = []
    for key, value in tree.items():
        if isinstance(value, dict):
            found.extend(_open_mappings(value, f"{prefix}{key}.") if value else [f"{prefix}{key}"])
    return found


class StorageHooks:
    """When data lives in Azure storage: credentials are checked as the context is created, the
    container before any node runs (before Spark starts), each failure naming the environment."""

    def __init__(self) -> None:
        self._remote: tuple[str, str, dict[str, Any]] | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        env = context.env or getattr(loader, "default_run_env", None) or "base"
        data_root = str((loader["globals"] or {}).get("data_root", ""))
        self._remote = None
        if not is_remote(data_root):
            return
        try:
            credentials = dict((loader["credentials"] or {}).get("storage") or {})
        except Exception as error:  # OmegaConf wraps the resolver's error
            reason = str(error).splitlines()[0].split("interpolation: ")[-1]
            raise StorageConfigError(
                f"Kedro environment '{env}' cannot load its storage credentials: {reason}. "
                f"Set it before running with --env {env} (read by conf/{env}/credentials.yml)."
            ) from None
        check_credentials(credentials, env)
        self._remote = (env, data_root, credentials)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self) -> None:
        if self._remote is not None:
            env, data_root, credentials = self._remote
            check_container(data_root, credentials, env)


LEFTOVER_STATES = {
    True: "its run is gone",
    False: "its run is still writing",
    None: "its run cannot be proven gone: another host, or an older version's name",
}


class RunRecordHooks:
    """What a run knows of itself, for the outputs that must say where they come from: the run's id
    (Kedro's session id, also in the run lock and the logs) and the project's version, in
    ``run_provenance`` before the first node. And what killed runs left under a local data root
    (staging and previous copies), listed as the run starts: each is removed, or put back, when its
    dataset is next written."""

    def __init__(self) -> None:
        self._root: Path | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            data_root = str((context.config_loader["globals"] or {}).get("data_root", "data"))
        except MissingConfigException:
            data_root = "data"
        local = not is_remote(data_root)
        self._root = Path(context.project_path) / data_root.removeprefix("file://") if local else None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog) -> None:
        if "run_provenance" in catalog:
            catalog.save(
                "run_provenance",
                {
                    "run_id": str(run_params.get("run_id")),
                    "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "project_version": __version__,
                },
            )
        if self._root is not None and self._root.is_dir():
            leftovers = find_leftovers(str(self._root))
            if leftovers:
                logger.warning(
                    "Left by runs that did not finish (each is removed, or put back in place, when its "
                    "dataset is next written; remove one by hand only once its run is gone):\n%s",
                    "\n".join(f"  {path} ({LEFTOVER_STATES[gone]})" for path, gone in leftovers),
                )
