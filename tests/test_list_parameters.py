"""List parameters take what users type on the command line (a YAML list, one name, or names separated by
spaces) and a ``--params`` value of the wrong type is refused before anything runs (issue 32), through
``kedro run`` as a user types it, in copies of the tiny chain project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from kedro.framework.cli.utils import _split_params

from tests.helpers import PROJECT_ROOT, load_catalog, make_project_copy

FORMS = {  # what a user types after `<key>=`, and the list every node must get
    "yaml_list": ("[essex]", ["essex"]),
    "one_name": ("essex", ["essex"]),
    "spaces": ("essex norfolk", ["essex", "norfolk"]),
    "spaces_in_a_yaml_list": ("[essex norfolk]", ["essex", "norfolk"]),
}


def kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``kedro <args>`` in ``project`` on the tests' environment (the tiny scenes)."""
    env = {
        **os.environ,
        "KEDRO_ENV": "test",
        "COLUMNS": "250",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        ["kedro", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def chain_copy(tiny_chain_project, tmp_path_factory) -> Path:
    """A copy of the chain's project: its tile candidates and scenes, for runs of single nodes."""
    project = tmp_path_factory.mktemp("list_params") / "project"
    shutil.copytree(tiny_chain_project, project, ignore=shutil.ignore_patterns("notebooks"))
    return project


@pytest.mark.parametrize("form", list(FORMS))
def test_the_region_lists_take_each_form_users_type(chain_copy: Path, form: str) -> None:
    """Both region lists of the README's step 4 in one run: data_preparation up to the split (labelling
    runs on Spark), development_inference's plan."""
    typed, names = FORMS[form]
    done = kedro(
        chain_copy,
        "run",
        "--pipelines=data_preparation,development_inference",
        "--to-nodes=select_tiles,plan_regions",
        f"--params=data_preparation.validation_regions={typed},development_inference.regions={typed}",
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    training = sorted({"middlesex", "worcester", "essex", "norfolk"} - set(names))
    assert f"Validation regions: {', '.join(names)}; training regions: {', '.join(training)}" in log
    planned = [
        line.split("Region ", 1)[1].split(":")[0] for line in log.splitlines() if "INFO     Region " in line
    ]
    assert planned == names


def list_parameters() -> list[tuple[str, list]]:
    """Every list-valued parameter of conf/base, as a dotted key and its configured list."""
    found = []

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, list):
                found.append((f"{prefix}{key}", value))

    for path in sorted((PROJECT_ROOT / "conf" / "base").glob("parameters*.yml")):
        walk(yaml.safe_load(path.read_text()) or {}, "")
    return found


def _typed(items: list) -> tuple[list[str], list]:
    """Two items a user might type for a list configured as ``items`` (numbers stay numbers)."""
    values = (items * 2)[:2] if items else [2012, 2016]
    return [str(value) for value in values], values


@pytest.mark.parametrize("key,configured", list_parameters(), ids=[key for key, _ in list_parameters()])
@pytest.mark.parametrize("form", ["yaml_list", "one_value", "spaces"])
def test_every_list_parameter_is_a_list_whatever_the_form(
    tmp_path: Path, key: str, configured: list, form: str
) -> None:
    """The values as Kedro's own ``--params`` parser gives them to the session: every node reads a
    list, of numbers where the configured list holds numbers."""
    typed, expected = _typed(configured)
    text = {"yaml_list": f"[{typed[0]}]", "one_value": typed[0], "spaces": " ".join(typed)}[form]
    runtime = _split_params(click.Context(click.Command("run")), None, f"{key}={text}")
    top, *path = key.split(".")
    value = load_catalog(make_project_copy(tmp_path / "p"), env="local", params=runtime).load(f"params:{top}")
    for part in path:
        value = value[part]
    assert value == (expected if form == "spaces" else expected[:1])


@pytest.mark.parametrize(
    "given,key",
    [
        ("data_preparation.min_label_share=high", "data_preparation.min_label_share"),
        ("data_preparation.validation_regions=true", "data_preparation.validation_regions"),
        ("development_inference.older_nlcd_year=2011 2016", "development_inference.older_nlcd_year"),
        ("development_inference.smoothing=false", "development_inference.smoothing"),
        ("sample_scene.allowed=maybe", "sample_scene.allowed"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_before_spark_starts(
    tmp_path: Path, given: str, key: str
) -> None:
    """On an empty project copy, the default pipeline: without the check the run would go on (to fail
    later, or not at all)."""
    project = make_project_copy(tmp_path / "project")
    done = kedro(project, "run", f"--params={given}")
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"Runtime parameter {key}=" in log and "Give e.g. --params" in log, log[-3000:]
    assert "Running node" not in log and "Spark" not in log


@pytest.mark.parametrize("where", ["--params", "conf"])
def test_a_parameter_under_its_old_name_is_refused_with_the_new_one(tmp_path: Path, where: str) -> None:
    """Renamed so one quantity has one name (issue 30): a user's old name, on the command line or in
    their environment's conf, must not be quietly outvoted by the new name's default."""
    project = make_project_copy(tmp_path / "project")
    args = ["--params=development_inference.older_year=2001"] if where == "--params" else []
    if where == "conf":
        (project / "conf/test/parameters_mine.yml").write_text("data_preparation:\n  min_purity: 0.5\n")
    done = kedro(project, "run", *args)
    log = done.stdout + done.stderr
    new = (
        "development_inference.older_nlcd_year" if where == "--params" else "data_preparation.min_label_share"
    )
    assert done.returncode != 0
    assert "Renamed parameter" in log and f"is now {new}" in log, log[-3000:]
    assert "Running node" not in log
