"""conf/hdinsight moves every dataset to ADLS Gen2 by configuration alone, and refuses to start
without credentials, naming what is missing."""

from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest
from kedro.framework.project import find_pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from packaging.requirements import Requirement

from landuse_kedro.storage import StorageConfigError
from tests.helpers import PROJECT_ROOT, load_catalog

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: kedro depends on tomli there
    import tomli as tomllib

ENV = "hdinsight"
# conf/hdinsight/globals.yml: azure.container @ azure.account / azure.prefix. Datasets that let
# adlfs normalise the URL report it without the host (the account then comes from the credentials).
ACCOUNT_HOST = "@mystorageaccount.dfs.core.windows.net"
DATA_ROOT = "abfss://landuse/landuse-kedro/"
PLACEHOLDER = (
    "DefaultEndpointsProtocol=https;AccountName=mystorageaccount;"
    "AccountKey=cGxhY2Vob2xkZXIta2V5LW5vdC1hLXNlY3JldA==;EndpointSuffix=core.windows.net"
)
IN_MEMORY = {"MemoryDataset", "SharedMemoryDataset"}


def dataset_url(dataset: Any) -> str | None:
    """Where a dataset reads/writes, as a URL, from what it describes of itself."""
    described = dataset._describe()
    path = described.get("filepath") or described.get("path") or getattr(dataset, "_path", None)
    if path is None:
        return None
    path = str(path)
    if "://" in path:
        return path
    protocol = described.get("protocol") or getattr(dataset, "_protocol", None) or "file"
    return f"{protocol}://{path}"


def in_data_root(url: str) -> bool:
    return url.replace(ACCOUNT_HOST, "", 1).startswith(DATA_ROOT)


def pipeline_datasets() -> set[str]:
    # Every pipeline module (the registry's own test fails on a broken one).
    return {
        name
        for pipe in find_pipelines(raise_errors=False).values()
        for name in pipe.datasets()
        if name != "parameters" and not name.startswith("params:")
    }


@pytest.fixture
def placeholder_credentials(monkeypatch) -> str:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", PLACEHOLDER)
    return PLACEHOLDER


def test_every_dataset_resolves_to_the_adls_gen2_container(
    project_copy: Path, placeholder_credentials: str
) -> None:
    catalog = load_catalog(project_copy, env=ENV)
    names = set(catalog.keys()) | {name for name in pipeline_datasets() if name in catalog}
    checked, wrong = [], {}
    for name in sorted(names):
        dataset = catalog.get(name)
        if type(dataset).__name__ in IN_MEMORY:
            continue
        url = dataset_url(dataset)
        if url is None or not in_data_root(url) or not re.search(r"/0[1-8]_[a-z_]+", url):
            wrong[name] = url
        checked.append(name)
    assert not wrong, f"datasets not under abfss://landuse{ACCOUNT_HOST}/landuse-kedro/<layer>: {wrong}"
    # The data contract's inputs and first outputs must be among them (more land with each pipeline).
    assert {"naip_scenes", "nlcd_rasters"} <= set(checked)
    assert len(checked) >= 10, checked


def test_storage_credentials_come_from_the_environment(
    project_copy: Path, placeholder_credentials: str
) -> None:
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env=ENV) as session:
        loader = session.load_context().config_loader
        assert loader["credentials"]["storage"]["connection_string"] == placeholder_credentials
        spark = loader["spark"]
    assert spark["spark.master"] == "yarn"
    assert spark["spark.app.name"] == "landuse-kedro"  # base settings still apply
    for size in ("spark.executor.instances", "spark.executor.cores", "spark.executor.memory"):
        assert size in spark


def test_a_missing_variable_is_named_with_the_environment(project_copy: Path, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(StorageConfigError) as error:
        load_catalog(project_copy, env=ENV)
    message = str(error.value)
    assert "AZURE_STORAGE_CONNECTION_STRING" in message
    assert f"'{ENV}'" in message and f"conf/{ENV}/credentials.yml" in message


def _activate(credentials_file: Path, block_title: str) -> None:
    """Switch conf/hdinsight/credentials.yml to one of its documented alternative blocks."""
    lines = credentials_file.read_text().splitlines()
    active_start = lines.index("storage:")
    active_end = next(i for i in range(active_start + 1, len(lines)) if not lines[i].startswith("  "))
    title = next(i for i, line in enumerate(lines) if line.startswith(f"# {block_title}"))
    block, i = [], title + 1
    while i < len(lines) and lines[i].startswith("# "):
        block.append(lines[i][2:])
        i += 1
    credentials_file.write_text("\n".join(lines[:active_start] + lines[active_end:] + block) + "\n")


@pytest.mark.parametrize(
    ("block", "variables"),
    [
        ("Account key", {"AZURE_STORAGE_ACCOUNT_KEY": "account_key"}),
        (
            "Service principal",
            {
                "AZURE_TENANT_ID": "tenant_id",
                "AZURE_CLIENT_ID": "client_id",
                "AZURE_CLIENT_SECRET": "client_secret",
            },
        ),
    ],
)
def test_documented_alternative_logins_work_and_name_their_variables(
    project_copy: Path, monkeypatch, block: str, variables: dict[str, str]
) -> None:
    _activate(project_copy / "conf" / ENV / "credentials.yml", block)
    for variable in variables:  # ids must look like GUIDs: azure-identity validates them
        monkeypatch.setenv(
            variable,
            "00000000-0000-0000-0000-000000000000"
            if variable.endswith("_ID")
            else f"placeholder-{variable.lower()}",
        )
    catalog = load_catalog(project_copy, env=ENV)
    assert in_data_root(dataset_url(catalog.get("naip_scenes")))

    last = list(variables)[-1]
    monkeypatch.delenv(last)
    with pytest.raises(StorageConfigError, match=rf"'{ENV}'.*{last}|{last}.*'{ENV}'"):
        load_catalog(project_copy, env=ENV)


def test_the_wheel_leaves_the_clusters_spark_alone() -> None:
    """A plain install of the wheel must not bring a pyspark that shadows the cluster's Spark
    (HDInsight 5.1: Spark 3.3); a laptop's `local` extra still gets pyspark 4."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if Requirement(r).name == "pyspark"]
    spark = {
        extra: Requirement(next(r for r in reqs if r.startswith("pyspark"))).specifier
        for extra, reqs in project["optional-dependencies"].items()
        if any(r.startswith("pyspark") for r in reqs)
    }
    assert "3.3.1" in spark["cluster"] and "4.0.0" in spark["local"] and "3.3.1" not in spark["local"]
    # Nor does anything installed here require pyspark outside an extra.
    pulling = [
        d.metadata["Name"]
        for d in distributions()
        for r in d.requires or []
        if Requirement(r).name == "pyspark" and Requirement(r).marker is None
    ]
    assert not pulling, pulling
