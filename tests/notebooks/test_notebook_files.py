"""Notebooks as text: every notebook is a jupytext pair (``py:percent`` twin, reviewed and diffed;
``.ipynb``, opened by papermill, nbval and JupyterLab), the two are in sync, and no outputs are committed."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
IPYNB = sorted(NOTEBOOKS.glob("*.ipynb"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_a_py_twin():
    assert IPYNB, "no notebooks found"
    twins = {p.stem for p in NOTEBOOKS.glob("*.py")}
    assert {p.stem for p in IPYNB} == twins


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_pair_in_sync(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", \
        f"{path.name} is not paired; run: jupytext --set-formats ipynb,py:percent {path}"
    twin = jupytext.read(path.with_suffix(".py"))
    assert _cells(nb) == _cells(twin), \
        f"{path.name} and its .py twin differ; edit the .py, then run `make notebooks` (jupytext --sync)"


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_no_outputs_committed_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them (make notebooks)"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert nb.metadata["kernelspec"]["name"] == "minilib"


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path):
    """`papermill --help-notebook` (and any tool reading parameters the papermill way) silently drops a
    line it cannot parse, e.g. one whose comment holds ``=``: every assignment must come through."""
    import ast

    from papermill.translators import PythonTranslator
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    parsed = [p.name for p in PythonTranslator.inspect(cell)]
    assert parsed == assigned, f"{path.name}: papermill misses {sorted(set(assigned) - set(parsed))}"
