"""docs/architecture.md's "Where to look" table is the pipeline registry's and the catalog's own.

The table leads from a file in data/ or a dataset name in kedro-viz to the code in one hop: for each
dataset a node writes (every registered pipeline, so the raw inputs too) the node, its pipeline and the
file its function lives in, plus the datasets only read. It is derived here from
``register_pipelines()`` and the default environment's catalog; when a node is renamed or moved, or an
entry's path changes, the test fails and prints the table to paste. To rewrite the doc's table:

    .venv/bin/python -m tests.test_where_to_look --write   # without --write: print it
"""

from __future__ import annotations

import inspect
import logging
import sys
import tempfile
from pathlib import Path, PurePosixPath

import landuse_kedro
from tests.helpers import PROJECT_ROOT, load_catalog, make_project_copy, registered_pipelines

DOC = PROJECT_ROOT / "docs" / "architecture.md"
SECTION = "## Where to look"
HEADER = ("entry", "in data/ (default environment)", "written by node", "pipeline", "node's file")
READ_ONLY = "(none: read only)"

Row = tuple[str, str, str, str, str]


def code(text: str) -> str:
    return f"`{text}`"


def source_file(func) -> str:
    """The function's file relative to the project (``src/landuse_kedro/...``), installed or not."""
    func = inspect.unwrap(getattr(func, "func", func))  # a functools.partial names its function
    package_parent = Path(landuse_kedro.__file__).resolve().parents[1]
    return "src/" + Path(inspect.getsourcefile(func)).resolve().relative_to(package_parent).as_posix()


def location(config: dict, project: Path) -> str:
    """Where the entry's data is, relative to the project: a file, a folder's partitions or memory."""
    target = config.get("filepath") or config.get("path")
    if target is None:
        return "(memory)"
    target = str(target).removeprefix(project.as_posix() + "/")
    suffix = config.get("filename_suffix", "")
    if "dataset" in config:  # partitioned: one file per key
        return code(f"{target}/<key>{suffix}")
    if suffix:  # a listing of files under a folder
        names = suffix if isinstance(suffix, str) else "{" + ",".join(suffix) + "}"
        return code(f"{target}/**/*{names}")
    if config.get("versioned"):  # Kedro versioning: a folder of versions, each holding the file
        return code(f"{target}/<version>/{PurePosixPath(target).name}")
    return code(target)


def where_to_look_rows() -> list[Row]:
    """The table's rows, sorted by entry then pipeline: one per (dataset, node writing it), and one
    per dataset that pipelines read and no node writes."""
    pipelines = {name: pipe for name, pipe in registered_pipelines().items() if name != "__default__"}
    with tempfile.TemporaryDirectory() as folder:
        project = make_project_copy(Path(folder) / "project")  # no developer's local credentials
        resolver = load_catalog(project, env="local").config_resolver
        rows: list[Row] = []
        read, written = set(), set()
        for pipeline, pipe in pipelines.items():
            for node in pipe.nodes:
                read.update(name for name in node.inputs if not name.startswith("params:"))
                for output in node.outputs:
                    written.add(output)
                    rows.append(
                        (
                            code(output),
                            location(resolver.resolve_pattern(output), project.resolve()),
                            code(node.name),
                            pipeline,
                            code(source_file(node.func)),
                        )
                    )
        for name in sorted(read - written - {"parameters"}):
            rows.append(
                (code(name), location(resolver.resolve_pattern(name), project.resolve()), READ_ONLY, "-", "-")
            )
    return sorted(rows, key=lambda row: (row[0].strip("`"), row[3]))


def markdown_table(rows: list[Row]) -> str:
    lines = [HEADER, ("---",) * len(HEADER), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def doc_table() -> tuple[str, list[Row]]:
    """The doc's table as text and as rows (header and separator left out)."""
    section = DOC.read_text().split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    cells = [
        tuple(cell.strip() for cell in line.strip().strip("|").split("|")) for line in table.splitlines()
    ]
    return table, [row for row in cells[2:] if row]


def test_where_to_look_is_the_registry_and_catalog():
    _, documented = doc_table()
    assert len(documented) >= 30, f"parsed only {len(documented)} rows of '{SECTION}' in {DOC}"
    expected = where_to_look_rows()
    assert len(expected) >= 30, "the registry or the catalog was not read"
    missing = [row for row in expected if row not in documented]
    stale = [row for row in documented if row not in expected]
    assert documented == expected, (
        f"'{SECTION}' in docs/architecture.md is out of date ({len(missing)} rows missing or changed, "
        f"{len(stale)} stale: {[row[0] + ' ' + row[2] for row in stale]}). Regenerate it with\n"
        f"  .venv/bin/python -m tests.test_where_to_look --write\nor paste this table:\n\n"
        + markdown_table(expected)
    )


def main(argv: list[str]) -> None:
    logging.disable(logging.WARNING)  # Kedro's start-up messages would mix with the table on stdout
    table = markdown_table(where_to_look_rows())
    if "--write" not in argv:
        print(table, end="")
        return
    old, _ = doc_table()
    DOC.write_text(DOC.read_text().replace(old, table, 1))
    rows = table.count("\n") - 2
    print(f"Rewrote the '{SECTION}' table of {DOC.relative_to(PROJECT_ROOT)} ({rows} rows)")


if __name__ == "__main__":
    main(sys.argv[1:])
