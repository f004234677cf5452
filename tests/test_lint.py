"""The code is formatted by `ruff format` and passes `ruff check` with long lines (E501) on: the
configuration in pyproject.toml, the same commands as `make lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINTED = ("src", "tests", "benchmarks")


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_the_configuration_flags_long_lines_and_unformatted_code(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(f"x = {'1 + ' * 60}1\ny = [1,2]\n")
    config = str(ROOT / "pyproject.toml")
    checked = ruff("check", "--config", config, "--no-cache", str(sample))
    assert checked.returncode == 1 and "E501" in checked.stdout, checked.stdout
    formatted = ruff("format", "--config", config, "--no-cache", "--check", str(sample))
    assert formatted.returncode == 1 and "1 file would be reformatted" in formatted.stdout, formatted.stdout


def test_ruff_format_leaves_every_file_as_it_is():
    result = ruff("format", "--check", *LINTED)
    files = (
        int(result.stdout.split(" files already formatted")[0].split()[-1]) if result.returncode == 0 else 0
    )
    assert result.returncode == 0, f"`make format` rewrites these:\n{result.stdout}{result.stderr}"
    assert files > 100  # it saw the project's files


def test_ruff_check_passes_with_long_lines_on():
    result = ruff("check", "--statistics", *LINTED)
    assert result.returncode == 0, f"`make lint` fails:\n{result.stdout}{result.stderr}"
    listed = ruff("check", "--show-files", *LINTED)
    assert sum(line.endswith(".py") for line in listed.stdout.splitlines()) > 100
