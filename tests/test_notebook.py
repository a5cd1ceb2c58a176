"""The notebooks execute top to bottom (on tiny models), so they cannot rot."""

from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = NOTEBOOKS / "explore_condensation.ipynb"


def _execute(path: Path, folder: Path) -> list:
    """Run the notebook at ``path`` in ``folder``; its code cells' outputs (errors fail the test)."""
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_notebook_runs(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MODEL", str(tiny_models["llama"]))
    monkeypatch.setenv("CONDENSE_NOTEBOOK_NUM_SEQS", "3")
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MAX_LENGTH", "32")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    outputs = _execute(NOTEBOOK, tmp_path)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # heatmap, one layer's distribution, comparison
    assert "(4, " in str(outputs[-1]["data"]["text/plain"])  # the tiny llama has 4 hidden-state entries


def test_in_memory_and_training_notebook_runs(tiny_models, monkeypatch, tmp_path):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MODEL", str(tiny_models["gpt2"]))
    monkeypatch.setenv("CONDENSE_NOTEBOOK_NUM_SEQS", "3")
    monkeypatch.setenv("CONDENSE_NOTEBOOK_MAX_LENGTH", "32")
    monkeypatch.setenv("CONDENSE_NOTEBOOK_STEPS", "4")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    outputs = _execute(NOTEBOOKS / "in_memory_and_training.ipynb", tmp_path)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # heatmap, the read-back curves, steps.png
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "still in training mode: True" in text and "eval/condense/mean_cos_last_half" in text
