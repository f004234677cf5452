"""Configuration stays one vocabulary (issue 12): no environment folder holds a copy of another's
file, and the catalog keeps the saving of its anchors (each entry states only what is its own)."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from tests.helpers import PROJECT_ROOT

CONF = PROJECT_ROOT / "conf"
ENVIRONMENTS = {"base", "local", "test", "azurite", "hdinsight", "standalone"}
CATALOG_MAX_LINES = 250  # issue 12: at least 30% below the catalog's 357 lines before anchors


def conf_files() -> dict[Path, list[Path]]:
    """Every configuration file of every folder in conf/, subfolders included (Kedro reads
    ``spark*/**`` and the like); hidden placeholders (.gitkeep) are not configuration."""
    return {
        folder: sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith((".", "__")) for part in p.relative_to(folder).parts)
        )
        for folder in sorted(CONF.iterdir())
        if folder.is_dir()
    }


def same_content(a: Path, b: Path) -> bool:
    """Byte-identical, or YAML that differs only in comments and layout (still a copy)."""
    if a.read_bytes() == b.read_bytes():
        return True
    if a.suffix in (".yml", ".yaml") and b.suffix in (".yml", ".yaml"):
        return yaml.safe_load(a.read_text()) == yaml.safe_load(b.read_text())
    return False


def test_no_environment_folder_holds_a_copy_of_another_folders_file():
    files = conf_files()
    assert ENVIRONMENTS <= {folder.name for folder in files}, sorted(f.name for f in files)
    assert sum(map(len, files.values())) >= 20 and all(files[CONF / env] for env in ENVIRONMENTS)
    pairs = [
        (a, b)
        for fa, fb in itertools.combinations(files, 2)
        for a, b in itertools.product(files[fa], files[fb])
    ]
    copies = [f"{a.relative_to(CONF)} == {b.relative_to(CONF)}" for a, b in pairs if same_content(a, b)]
    assert not copies, (
        "the same configuration in two folders (put what they share in base, or let "
        f"each state only what is its own): {copies}"
    )


def test_the_comparison_sees_copies_that_differ_only_in_comments(tmp_path: Path):
    a, b, c = tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "c.yml"
    a.write_text("# one\nspark.master: local[2]\n")
    b.write_text("# two\n\nspark.master:   local[2]  # same\n")
    c.write_text("spark.master: local[3]\n")
    assert same_content(a, b) and not same_content(a, c)


def test_the_catalog_stays_short():
    catalogs = sorted((CONF / "base").glob("catalog*.yml"))
    assert len(catalogs) >= 6, catalogs
    assert not list(CONF.glob("*/catalog*/**/*.yml")), "a catalog in a subfolder: count it here too"
    lines = {p.name: len(p.read_text().splitlines()) for p in catalogs}
    assert sum(lines.values()) <= CATALOG_MAX_LINES, (
        f"conf/base/catalog_*.yml have {sum(lines.values())} lines ({lines}), more than "
        f"{CATALOG_MAX_LINES}: share what entries have in common through `_` anchors (see "
        "catalog_development_inference.yml) instead of repeating it"
    )
