"""The exploration notebook executes top to bottom (on a tiny model), so it cannot rot."""

from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore_condensation.ipynb"


def test_notebook_runs(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MODEL", str(tiny_models["llama"]))
    monkeypatch.setenv("CONDENSE_NOTEBOOK_NUM_SEQS", "3")
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MAX_LENGTH", "32")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # heatmap, one layer's distribution, comparison
    assert "(4, " in str(outputs[-1]["data"]["text/plain"])  # the tiny llama has 4 hidden-state entries
