"""Shared fixtures: a throw-away copy of the project to run pipelines in, so tests never touch data/.
Helpers that tests import live in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import CHAIN, make_project_copy, run_pipeline, spark_cluster


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    return make_project_copy(tmp_path / "project")


@pytest.fixture(scope="session")
def tiny_chain_project(tmp_path_factory) -> Path:
    """The whole chain, once per test session, on the `test` environment's tiny sample scene.

    Shared by the tests that need real outputs (notebook, environment comparisons) so the
    expensive run happens once.
    """
    project = make_project_copy(tmp_path_factory.mktemp("chain") / "project")
    for name in CHAIN:
        run_pipeline(project, name)
    return project


# ------------------------------------------------------------------ a real Spark standalone cluster


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """The project's pyspark as a standalone cluster (:func:`spark_cluster`), booting while the
    local runs work; ``wait()`` returns the master URL once both workers registered;
    ``applications()`` counts the applications the master has run (so a test can tell a cluster
    run from a silent fallback to local mode)."""
    import pyspark

    with spark_cluster(Path(pyspark.__file__).parent, tmp_path_factory.mktemp("cluster")) as cluster:

        def wait() -> str:
            cluster.wait()
            return cluster.url

        def applications() -> int:
            state = cluster.state()
            return len(state.get("activeapps", [])) + len(state.get("completedapps", []))

        yield SimpleNamespace(wait=wait, applications=applications)
