"""Spark defaults are safe: local environments stay on loopback, the standalone configuration says
how to authenticate, and SparkHooks stops only a session it started (issue 11, item 5)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from kedro.pipeline import Node

from landuse_kedro.hooks import SparkHooks
from landuse_kedro.spark import spark_is_running
from tests.helpers import PROJECT_ROOT, local_spark_session

CONF = PROJECT_ROOT / "conf"
CLUSTER_ENVS = {"standalone", "hdinsight"}  # executors on other machines must reach the driver
LOOPBACK = "127.0.0.1"


def merged_spark_conf(env: str) -> dict:
    """base then ``env``, as Kedro's config loader merges the flat ``spark*`` files."""
    merged: dict = {}
    for folder in ("base", env):
        for path in sorted((CONF / folder).glob("spark*.yml")):
            merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def environments() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "base")


def test_every_environment_is_classified():
    local = {
        env
        for env in environments()
        if str(merged_spark_conf(env).get("spark.master", "")).startswith("local")
    }
    assert local == {"local", "test", "azurite"}
    assert set(environments()) == local | CLUSTER_ENVS  # a new environment must be classified here


@pytest.mark.parametrize("env", ["local", "test", "azurite"])
def test_non_cluster_environments_bind_to_loopback(env):
    conf = merged_spark_conf(env)
    assert str(conf["spark.master"]).startswith("local")
    assert conf.get("spark.driver.bindAddress") == LOOPBACK
    assert conf.get("spark.driver.host") == LOOPBACK


def test_standalone_documents_authentication_without_a_secret_in_the_file():
    text = (CONF / "standalone" / "spark.yml").read_text()
    assert "spark.authenticate: true" in text
    assert "spark.authenticate.secret: ${env_required:" in text  # from the environment only
    conf = merged_spark_conf("standalone")
    assert "spark.authenticate" not in conf  # documented, not on: the test cluster has no secret
    assert "spark.authenticate.secret" not in conf


# ------------------------------------------------------------------------------------- the hook


def _spark_node() -> Node:
    return Node(lambda: 1, inputs=None, outputs="one", name="spark_node", tags=["spark"])


def _hook(conf: dict[str, str] | None = None) -> SparkHooks:
    hooks = SparkHooks()
    hooks._spark_conf = conf or {}
    return hooks


class _Records(logging.Handler):
    """Collects the hook module's records directly: Kedro's logging setup in other tests can
    detach pytest's caplog handler, and a missing record must not pass as "no warning"."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def hook_records():
    logger, handler = logging.getLogger("landuse_kedro.hooks"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def existing_session():
    yield from local_spark_session()


@pytest.mark.spark
@pytest.mark.parametrize("end", ["after_pipeline_run", "on_pipeline_error"])
def test_hook_leaves_a_session_it_did_not_start_running(existing_session, hook_records, end):
    hooks = _hook({"spark.master": "local[1]"})
    hooks.before_node_run(node=_spark_node())
    getattr(hooks, end)()
    assert existing_session.range(3).count() == 3
    assert any("did not start it" in message for message in hook_records), hook_records


@pytest.mark.spark
def test_hook_stops_the_session_it_started(tmp_path: Path):
    from pyspark.sql import SparkSession

    assert not spark_is_running(), "a session leaked from another test; this one would not start its own"
    hooks = _hook(
        {
            "spark.master": "local[1]",
            "spark.ui.enabled": "false",
            "spark.driver.bindAddress": LOOPBACK,
            "spark.driver.host": LOOPBACK,
            "spark.sql.warehouse.dir": str(tmp_path / "warehouse"),
        }
    )
    hooks.before_node_run(node=Node(lambda: 1, inputs=None, outputs="x", name="plain"))
    assert not spark_is_running()  # a node without the spark tag starts nothing
    hooks.before_dataset_loaded(dataset_name="table", node=_spark_node())
    session = SparkSession.getActiveSession()
    assert session is not None and session.range(2).count() == 2  # the hook did start one
    hooks.after_pipeline_run()
    assert not spark_is_running()
    assert SparkSession.getActiveSession() is None
    assert session.sparkContext._jsc is None  # stopped, not merely forgotten


def test_hdinsight_service_principal_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    """The commented service-principal keys of conf/hdinsight/spark.yml, uncommented, take their
    values from the driver's environment: no secret in the file, none on a spark-submit command line
    (which `ps` shows to every user), in the file or in the deploy guide (issue 28)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tests.helpers import make_project_copy

    project = make_project_copy(tmp_path / "project")
    path = project / "conf" / "hdinsight" / "spark.yml"
    text = path.read_text()
    keys = [line[2:] for line in text.splitlines() if line.startswith("# spark.hadoop.fs.azure.account.")]
    assert len(keys) == 5, keys
    path.write_text(text + "".join(f"{key.replace('<account>', 'second')}\n" for key in keys))
    secret, client, tenant = "s3cr3t-0f-the-test", "client-0f-the-test", "tenant-0f-the-test"
    for name, value in (
        ("AZURE_CLIENT_SECRET", secret),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_TENANT_ID", tenant),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "placeholder")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="hdinsight") as session:
        conf = session.load_context().config_loader["spark"]
    account = "second.dfs.core.windows.net"
    assert conf[f"spark.hadoop.fs.azure.account.oauth2.client.secret.{account}"] == secret
    assert conf[f"spark.hadoop.fs.azure.account.oauth2.client.id.{account}"] == client
    assert conf[f"spark.hadoop.fs.azure.account.oauth2.client.endpoint.{account}"].endswith(
        f"/{tenant}/oauth2/token"
    )
    for document in (CONF / "hdinsight" / "spark.yml", PROJECT_ROOT / "docs" / "deployment.md"):
        lines = document.read_text().splitlines()
        assert not [line for line in lines if "--conf" in line and "secret" in line.lower()], document
        assert not [line for line in lines if line.lstrip().startswith("export AZURE_")], document
