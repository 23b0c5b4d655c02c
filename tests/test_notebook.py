"""Executes notebooks/losses_quickstart.ipynb in a fresh kernel of this interpreter and checks its outputs."""

import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "losses_quickstart.ipynb"


def _text(cell) -> str:
    """All text a code cell printed or displayed."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # A last cell reporting which interpreter ran the kernel: jupyter_client replaces the kernel spec's
    # "python" with sys.executable, so the kernel must be this venv's Python, not one found on PATH.
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"))
    mp = pytest.MonkeyPatch()
    # Headless plotting that still yields a PNG output (the kernel inherits this environment).
    mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            startup_timeout=120,
            resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}},
        )
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        mp.undo()
    return nb


def test_kernel_is_this_interpreter(executed):
    assert f"KERNEL_PREFIX={sys.prefix}" in _text(executed.cells[-1])


def test_no_cell_errored(executed):
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert all(out.output_type != "error" for out in cell.outputs), cell.source


def test_optimal_discriminator_identity_printed(executed):
    text = "".join(_text(c) for c in executed.cells if c.cell_type == "code")
    assert "identity holds: True" in text
    value = float(re.search(r"V\(G, D\*\)\s+= (-?[0-9.]+)", text).group(1))
    identity = float(re.search(r"2·JSD − 2·log 2\s+= (-?[0-9.]+)", text).group(1))
    assert abs(value - identity) < 1e-5
    assert -2 * 0.6931472 < value < 0  # strictly between −2·log 2 (equal densities) and 0 (disjoint)


def test_plot_and_vanishing_gradient_ratio(executed):
    outputs = [out for c in executed.cells if c.cell_type == "code" for out in c.outputs]
    assert any("image/png" in out.get("data", {}) for out in outputs)
    text = "".join(_text(c) for c in executed.cells if c.cell_type == "code")
    ratio = float(re.search(r"at l = -10: ([0-9.]+)", text).group(1))
    assert abs(ratio - 22026.5) < 0.5  # e^10 = 22026.47
