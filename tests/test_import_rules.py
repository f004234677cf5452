"""Imports point down (docs/architecture.md, "Rules of the house"): checked on the source with ``ast``, every
import counted, those inside functions too.

    .venv/bin/python -m tests.test_import_rules      # prints each broken rule; exit 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "landuse_kedro"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

RULES = (
    # (modules the rule is about, forbidden import prefixes, why)
    (
        ("tiling",),
        ("pyspark", "landuse_kedro.scoring", "landuse_kedro.spark", "landuse_kedro.window_jobs"),
        "tiling plans and opens scenes: it knows no Spark and no scorer",
    ),
    (
        ("scoring",),
        ("landuse_kedro.tiling", "landuse_kedro.window_jobs"),
        "scoring scores files: it knows no scenes",
    ),
    (("pipelines.training",), ("landuse_kedro.scoring",), "training loads models through models/"),
    (("datasets",), ("landuse_kedro.tiling", "landuse_kedro.window_jobs"), "datasets know no tiling"),
    (("models",), ("pyspark", "landuse_kedro.spark"), "a model runs the same on the driver and on a worker"),
)
NO_SPARK = ("tiling", "models", "raster", "classes")
"""Modules that run the same with or without Spark: no Spark import, and no Spark call on an object
handed in (``spark.createDataFrame``, ``frame.mapInPandas``)."""
SPARK_CALLS = {"sparkContext", "createDataFrame", "mapInPandas", "parallelize", "broadcast", "toPandas"}
SESSION_HOME = "spark"
"""The one module that names ``SparkSession``: nodes and datasets find the session through it."""


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """(line, modules, names) of each import in ``path``: ``from X import Y`` is ``X`` and maybe ``X.Y``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, (alias.name,), ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = tuple(alias.name for alias in node.names)
            found.append((node.lineno, (node.module, *(f"{node.module}.{n}" for n in names)), names))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(src: Path = SRC) -> list[str]:
    """Every import in the package ``src`` that breaks a rule, as ``file:line: what (why)``."""
    broken = []
    for path in sorted(src.rglob("*.py")):
        module = module_name(path, src)
        where = path.relative_to(src.parent)
        for line, modules, names in imports(path):
            for owners, forbidden, why in RULES:
                if any(_within(module, owner) for owner in owners):
                    hit = next((m for m in modules if any(_within(m, f) for f in forbidden)), None)
                    broken += [f"{where}:{line}: imports {hit} ({why})"] if hit else []
            pipeline = module.split(".")[1] if module.startswith("pipelines.") else None
            others = {
                m.split(".")[2] for m in modules if _within(m, f"{PACKAGE}.pipelines") and m.count(".") >= 2
            }
            if pipeline and others - {pipeline}:
                broken.append(f"{where}:{line}: imports {modules[0]} (no pipeline imports another)")
            if "SparkSession" in names and module != SESSION_HOME:
                broken.append(
                    f"{where}:{line}: imports SparkSession (only {SESSION_HOME}.py knows the session)"
                )
        if any(_within(module, owner) for owner in NO_SPARK):
            tree = ast.parse(path.read_text(), str(path))
            calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in SPARK_CALLS]
            broken += [f"{where}:{n.lineno}: calls Spark's {n.attr} (it runs without Spark)" for n in calls]
    return broken


def test_the_package_keeps_every_import_rule():
    assert len(list(SRC.rglob("*.py"))) > 40, "the package was not found: this check would be void"
    assert violations() == []


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def test_each_rule_is_seen_when_broken(tmp_path):
    src = tmp_path / PACKAGE
    _write(
        src,
        "tiling.py",
        "def plan(spark):\n    from pyspark.sql import functions\n    spark.createDataFrame([])\n",
    )
    _write(src, "scoring.py", "from landuse_kedro import tiling\n")
    _write(src, "pipelines/training/nodes.py", "from landuse_kedro.scoring import load_predictor\n")
    _write(src, "datasets/x.py", "import landuse_kedro.tiling\n")
    _write(src, "models/predictor.py", "from landuse_kedro.spark import task_count\n")
    _write(src, "pipelines/a/nodes.py", "from landuse_kedro.pipelines.b.nodes import f\n")
    _write(src, "pipelines/a/pipeline.py", "from landuse_kedro.pipelines.a import nodes\n")  # its own: fine
    _write(src, "hooks.py", "from pyspark.sql import SparkSession\n")
    _write(src, "spark.py", "from pyspark.sql import SparkSession\n")  # the session's home: fine
    found = violations(src)
    expected = {
        "tiling.py:2": "pyspark.sql",
        "tiling.py:3": "createDataFrame",
        "scoring.py:1": "landuse_kedro.tiling",
        "training/nodes.py:1": "landuse_kedro.scoring",
        "datasets/x.py:1": "landuse_kedro.tiling",
        "models/predictor.py:1": "landuse_kedro.spark",
        "a/nodes.py:1": "landuse_kedro.pipelines.b",
        "hooks.py:1": "SparkSession",
    }
    for place, what in expected.items():
        assert any(place in line and what in line for line in found), (place, found)
    assert not any("pipeline.py" in line or "/spark.py" in line for line in found), found


if __name__ == "__main__":
    problems = violations(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC)
    print("\n".join(problems) or "every import rule holds")
    sys.exit(1 if problems else 0)
