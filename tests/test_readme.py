"""The README's commands name things that exist: pipelines, environments, parameters, scripts, make targets
and files. (`make run` / `make test` themselves are run by CI; the README is what a newcomer follows.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, load_catalog, make_project_copy

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
    from kedro.framework.project import configure_project, pipelines

    configure_project("landuse_kedro")
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


@pytest.mark.parametrize("path", sorted(set(re.findall(r"\]\(((?:docs|notebooks|benchmarks)/[^)]+)\)", README))
                                        | set(re.findall(r"`(benchmarks/\w+\.py)`", README))))
def test_files_the_readme_points_to_exist(path: str):
    assert (PROJECT_ROOT / path).exists(), path
