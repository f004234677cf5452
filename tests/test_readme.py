"""The README's commands name things that exist: pipelines, environments, parameters, scripts, make targets
and files. (`make run` / `make test` themselves are run by CI; the README is what a newcomer follows.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from tests.helpers import PROJECT_ROOT, load_catalog, make_project_copy, registered_pipelines

README = (PROJECT_ROOT / "README.md").read_text()


def _commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", README)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [c for c in lines + inline if re.match(r"(kedro|make|python|\.venv)\b", c)]


def _options(flag: str) -> set[str]:
    return {m for c in _commands() for m in re.findall(rf"{flag}[ =]([\w.=-]+)", c)}


def test_readme_has_the_two_setup_commands():
    setup = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [line.split()[:2] for line in setup.strip().splitlines()] == [["make", "run"], ["make", "test"]]


def test_make_targets_exist():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = {m for c in _commands() for m in re.findall(r"^make (\w+)", c)}
    assert targets >= {"run", "test"}
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_pipelines_named_in_the_readme_are_registered():
    pipelines = registered_pipelines()
    named = _options("--pipelines")
    assert named, "the README shows how to run one pipeline"
    assert named <= set(pipelines), named - set(pipelines)


def test_environments_named_in_the_readme_exist():
    named = _options("--env")
    assert "hdinsight" in named
    for env in named:
        assert (PROJECT_ROOT / "conf" / env).is_dir(), env


def test_parameters_overridden_in_the_readme_exist(tmp_path: Path):
    catalog = load_catalog(make_project_copy(tmp_path / "p"), env="local")
    overrides = _options("--params")
    assert overrides
    for override in overrides:
        key = override.split("=")[0]
        top, *path = key.split(".")
        value = catalog.load(f"params:{top}")
        for part in path:
            assert part in value, key
            value = value[part]


@pytest.mark.parametrize(
    "path",
    sorted(
        set(re.findall(r"\]\(((?:docs|notebooks|benchmarks)/[^)]+)\)", README))
        | set(re.findall(r"`(benchmarks/\w+\.py)`", README))
    ),
)
def test_files_the_readme_points_to_exist(path: str):
    assert (PROJECT_ROOT / path).exists(), path


# ------------------------------------------------------------------ "Mapping other regions", verbatim


def _section_commands(title: str) -> list[str]:
    section = README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mapped_regions(tiny_chain_project, tmp_path_factory):
    """The section's commands run as written (through a shell, in a copy of a project that has a
    trained model), in the tests' environment (``KEDRO_ENV=test``, the tiny scenes)."""
    project = tmp_path_factory.mktemp("readme_regions") / "project"
    shutil.copytree(tiny_chain_project, project, ignore=shutil.ignore_patterns("notebooks"))
    env = {
        **os.environ,
        "KEDRO_ENV": "test",
        "COLUMNS": "200",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    before = {
        path: path.read_bytes() for path in (project / "data/07_model_output/regions/middlesex").iterdir()
    }
    outputs = []
    for command in _section_commands("Mapping other regions"):
        done = subprocess.run(
            command,
            shell=True,
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
    return project, outputs, before


def test_mapping_other_regions_as_the_readme_says(mapped_regions):
    project, (run_log, catalog_listing), before = mapped_regions
    regions = project / "data/07_model_output/regions"
    for region in ("essex", "norfolk"):
        assert f"Region {region}:" in run_log
        for name in ("smoothed_classes.tif", "change_candidates.geojson", "change_candidates.csv"):
            assert (regions / region / name).is_file(), (region, name)
        assert (project / f"data/08_reporting/regions/{region}/development_maps.png").is_file()
    for path, content in before.items():  # the chain's own region, mapped earlier, is untouched
        assert path.read_bytes() == content, path
    with rasterio.open(project / "data/07_model_output/county/smoothed_classes.tif") as mosaic:
        assert mosaic.tags()["regions"] == "essex norfolk"
    # the listing shows where the per-region outputs go
    assert "change_candidates:" in catalog_listing and str(regions) in catalog_listing


def test_a_run_logs_no_warning_the_project_causes(mapped_regions):
    _, (run_log, catalog_listing), _ = mapped_regions
    assert "Region essex:" in run_log and "change_candidates:" in catalog_listing  # both logs are captured
    for log in (run_log, catalog_listing):
        for noise in ("Could not extract type hints", "cuInit", "Could not find cuda drivers", "oneDNN"):
            assert noise not in log, noise
        warnings = [line for line in log.splitlines() if re.search(r"\bWARNING\b|Warning:", line)]
        unexplained = [line for line in warnings if not any(known in line for known in KNOWN_WARNINGS)]
        assert not unexplained, unexplained


KNOWN_WARNINGS = ("register_new_resolver() is deprecated", "Using incubator modules: jdk.incubator.vector")
"""Warnings the project cannot avoid, each named in the README's "What the logs show"."""


def test_the_readme_names_each_warning_a_run_still_shows():
    section = README.split("## What the logs show\n", 1)[1].split("\n## ", 1)[0]
    for warning in KNOWN_WARNINGS:
        assert warning in section, warning


# ------------------------------------------------------------ "Using real NAIP and NLCD", step 4 verbatim


def test_step_4_of_using_real_naip_runs_as_written(tiny_chain_project, tmp_path: Path):
    """Step 4's command, through a shell, on a copy of the chain's project whose scenes are renamed as a
    user's own (`east`: middlesex, `west`: essex): the run holds out east, trains on west, maps east."""
    (command,) = _section_commands("Using real NAIP and NLCD")
    assert "validation_regions=east," in command and "development_inference.regions=east" in command
    project = tmp_path / "project"
    shutil.copytree(tiny_chain_project, project, ignore=shutil.ignore_patterns("notebooks"))
    naip = project / "data/01_raw/naip"
    for scene in sorted(naip.iterdir()):
        region, year = scene.stem.rsplit("_", 1)
        renamed = {"middlesex": "east", "essex": "west"}.get(region)
        if renamed:
            scene.rename(naip / f"{renamed}_{year}.tif")
        else:
            scene.unlink()
    env = {
        **os.environ,
        "KEDRO_ENV": "test",
        "COLUMNS": "200",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        command.strip(),
        shell=True,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"{command}\n{log[-4000:]}"
    assert "Validation regions: east; training regions: west" in log
    assert "Region east:" in log
    assert (project / "data/07_model_output/regions/east/smoothed_classes.tif").is_file()
