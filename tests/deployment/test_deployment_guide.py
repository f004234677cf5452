"""docs/deployment.md's build, install and run steps are commands the tests run: each shell block
of steps 2-4 is marked `<!-- tested: NAME -->` (tests/deployment/test_packaged_cluster.py reads and
runs it) or `<!-- not run here: WHY -->`, and the wheel it names is the one `kedro package` builds."""

from __future__ import annotations

import re

from tests.helpers import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "deployment.md"
ENV_NAME = "packaged_check"  # the run's environment (test_packaged_cluster.py builds it)
PIPELINES = ("spark_scoring", "development_inference")
# The only words of the guide's spark-submit command that belong to one cluster: replaced there.
SITE = {"--master yarn": "--master {master}", "--env hdinsight": f"--env {ENV_NAME}"}
PIPELINE = "--pipelines spark_scoring"
# Shell blocks of the guide's build, install and run steps that cannot run here (each says why).
NOT_RUN_HERE = ["copy to the head node", "HDInsight script action", "credentials"]


def guide_blocks() -> list[tuple[str, str]]:
    """(mark, commands) of each shell block in steps 2-4 of the guide (build, install, run); the
    mark is the HTML comment on the line above: `tested: <name>` or `not run here: <why>`."""
    text = GUIDE.read_text()
    steps = re.search(r"^## 2\. .*?(?=^## 5\. )", text, flags=re.S | re.M)
    assert steps, "docs/deployment.md has lost its steps 2-4"
    return re.findall(r"(?:<!-- (.*?) -->\n)?```bash\n(.*?)```", steps.group(0), flags=re.S)


def guide_block(name: str) -> str:
    found = [body for mark, body in guide_blocks() if mark == f"tested: {name}"]
    assert len(found) == 1, f"docs/deployment.md should have one block marked 'tested: {name}'"
    return found[0]


def submit_command(master: str) -> str:
    command = guide_block("submit")
    for text, replacement in {**SITE, PIPELINE: f"--pipelines {','.join(PIPELINES)}"}.items():
        assert command.count(text) == 1, f"the guide's spark-submit command should hold {text!r} once"
        command = command.replace(text, replacement.format(master=master))
    return command


def test_every_block_of_the_build_install_and_run_steps_is_run_here_or_says_why_not():
    marks = [mark for mark, _ in guide_blocks()]
    assert marks and all(m.startswith(("tested: ", "not run here: ")) for m in marks), (
        f"a shell block of steps 2-4 has no <!-- tested: NAME --> or <!-- not run here: WHY --> mark: {marks}"
    )
    assert sorted(m for m in marks if m.startswith("tested: ")) == [
        f"tested: {name}" for name in ("build", "install", "submit", "unpack")
    ]
    assert [
        m.split(":")[1].split("(")[0].strip() for m in marks if m.startswith("not run here:")
    ] == NOT_RUN_HERE


def test_the_wheel_the_guide_names_is_the_one_kedro_package_builds():
    import landuse_kedro

    versions = set(re.findall(r"landuse_kedro-([^-/\s]+)-py3-none-any\.whl", GUIDE.read_text()))
    assert landuse_kedro.__version__ in versions and versions <= {landuse_kedro.__version__, "*"}
