"""The usage examples in the project datasets' docstrings work, so they cannot rot.

Each dataset class of ``landuse_kedro.datasets`` shows, in the style of kedro-datasets, a YAML example
(a ```yaml block taken from ``conf/base/catalog_*.yml``) and a Python one (``>>>`` lines). Here the YAML
builds datasets of that class through ``DataCatalog.from_config`` and says what the project's catalog
says for the same entry; the Python runs as a doctest with a ``tmp_path``.
"""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.io import AbstractDataset, DataCatalog
from kedro_datasets.partitions import PartitionedDataset

from landuse_kedro import datasets
from tests.helpers import PROJECT_ROOT, load_catalog, make_project_copy

DATASET_CLASSES = sorted(
    (
        obj
        for obj in (getattr(datasets, name) for name in datasets.__all__)
        if isinstance(obj, type) and issubclass(obj, AbstractDataset)
    ),
    key=lambda cls: cls.__name__,
)
GLOBALS = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "globals.yml").read_text())
NOT_COMPARED = ("credentials", "metadata")  # resolved to the secrets; kedro-viz's layer: not the dataset's


def yaml_example(cls: type) -> dict[str, Any]:
    """The catalog entries of every ```yaml block in ``cls``'s docstring, merged."""
    entries: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", inspect.getdoc(cls) or "", flags=re.S):
        entries.update(yaml.safe_load(block) or {})
    return entries


def with_globals(entries: dict[str, Any], data_root: Path) -> dict[str, Any]:
    """``${globals:...}`` replaced as the config loader would: ``data_root`` by the given folder, the
    rest from ``conf/base/globals.yml``."""
    values = {**GLOBALS, "data_root": data_root.as_posix()}
    text = re.sub(r"\$\{globals:(\w+)\}", lambda match: str(values[match.group(1)]), yaml.safe_dump(entries))
    assert "${" not in text, text
    return yaml.safe_load(text)


def builds(dataset: AbstractDataset, cls: type) -> bool:
    """``dataset`` is a ``cls``, or a PartitionedDataset whose partitions are."""
    if isinstance(dataset, cls):
        return True
    # PartitionedDataset has no public accessor for its partitions' class
    return isinstance(dataset, PartitionedDataset) and dataset._dataset_type is cls  # noqa: SLF001


def test_every_project_dataset_has_a_yaml_example():
    names = [cls.__name__ for cls in DATASET_CLASSES]
    assert len(names) >= 5 and "GeoTiffDataset" in names, f"dataset classes not found: {names}"
    assert [name for name, cls in zip(names, DATASET_CLASSES, strict=True) if not yaml_example(cls)] == []


@pytest.mark.parametrize("cls", DATASET_CLASSES, ids=lambda cls: cls.__name__)
def test_the_yaml_example_builds_the_dataset(cls, tmp_path):
    entries = with_globals(yaml_example(cls), tmp_path)
    catalog = DataCatalog.from_config(entries, credentials={"storage": {}})
    for name in entries:
        dataset = catalog.get(name)
        assert builds(dataset, cls), f"{name}: {type(dataset).__name__}, not a {cls.__name__}"
        assert str(tmp_path) in str(dataset), f"{name}: not under the substituted data_root: {dataset}"


def test_the_yaml_examples_say_what_the_project_catalog_says(tmp_path):
    """Each example entry is the project's own entry of that name (default environment), key for key
    (apart from credentials and kedro-viz metadata)."""
    project = make_project_copy(tmp_path / "project")
    resolver = load_catalog(project, env="local").config_resolver
    compared = 0
    for cls in DATASET_CLASSES:
        for name, example in with_globals(yaml_example(cls), project / "data").items():
            project_entry = resolver.resolve_pattern(name)
            stated = {key: value for key, value in example.items() if key not in NOT_COMPARED}
            assert {key: project_entry.get(key) for key in stated} == stated, (
                f"{cls.__name__}'s example '{name}' differs from the project's catalog: {project_entry}"
            )
            compared += 1
    assert compared >= len(DATASET_CLASSES)


def _python_example(cls: type) -> doctest.DocTest | None:
    tests = [test for test in doctest.DocTestFinder(recurse=False).find(cls) if test.examples]
    return tests[0] if tests else None


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(
            cls, marks=[pytest.mark.spark] if "pyspark" in (cls.__doc__ or "") else [], id=cls.__name__
        )
        for cls in DATASET_CLASSES
        if _python_example(cls) is not None
    ],
)
def test_the_python_example_runs(cls, tmp_path):
    from pyspark.sql import SparkSession

    already_running = SparkSession.getActiveSession() is not None
    test = _python_example(cls)
    test.globs.update(tmp_path=tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    try:
        result = runner.run(test, out=lambda text: pytest.fail(f"{cls.__name__}'s Python example:\n{text}"))
    finally:
        session = SparkSession.getActiveSession()
        if session is not None and not already_running:  # the example started it: stop it
            session.stop()
    assert result.attempted > 0 and result.failed == 0
