"""The walkthrough notebook runs headlessly on a real (tiny) run's outputs, so it never rots."""

from __future__ import annotations

import pytest

from tests.helpers import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "walkthrough.ipynb"
KERNEL = "landuse-walkthrough-test"
FIGURE_TAG = "figure"  # cells that must draw at least one image


def _read():
    import nbformat

    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_is_executed_with_its_figures():
    """Committed executed, top to bottom, on the sample scene's run, so a reader browsing the
    repository sees the maps (``make notebook`` refreshes it)."""
    import nbformat

    notebook = _read()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the walkthrough has no code"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        "execute it top to bottom"
    )
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
    for cell in code:
        if FIGURE_TAG in cell.metadata.get("tags", []):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), (
                f"no figure: {cell.source[:80]!r}"
            )
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code), (
        "a cell tagged `parameters` makes the project path and env injectable"
    )


@pytest.mark.slow
def test_walkthrough_executes_on_the_tiny_chain_outputs(tiny_chain_project, tmp_path, monkeypatch):
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient

    # A kernelspec of this very interpreter, so the notebook sees the same packages as the tests.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LANDUSE_PROJECT", str(tiny_chain_project))
    monkeypatch.setenv("LANDUSE_ENV", "test")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")  # the kernel inherits it
    workdir = tiny_chain_project / "notebooks"  # where a user opens it: <project>/notebooks
    workdir.mkdir(exist_ok=True)

    notebook = _read()
    client = NotebookClient(
        notebook, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    figure_cells = [c for c in notebook.cells if FIGURE_TAG in c.metadata.get("tags", [])]
    assert figure_cells, f"no cell is tagged {FIGURE_TAG!r}"
    for cell in figure_cells:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, f"drew nothing: {cell.source[:120]!r}"
