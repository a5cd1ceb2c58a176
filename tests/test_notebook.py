"""The notebooks execute top to bottom (on tiny models), so they cannot rot; the committed ones
carry the outputs of their current code (executed by notebooks/execute.py, `make notebooks`)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = NOTEBOOKS / "explore_condensation.ipynb"
_spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
execute_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_script)


@pytest.mark.parametrize("name", execute_script.NOTEBOOKS)
def test_committed_outputs_are_those_of_the_current_code(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    recorded = nb.metadata.get("condense", {}).get("code_sha256")
    assert recorded, f"{name} has no recorded execution: run `make notebooks` and commit it"
    assert recorded == execute_script.code_sha256(nb), (
        f"{name}: a code cell changed since its outputs were made: run `make notebooks` and commit it")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not executed top to bottom in one kernel: {counts}"
    outputs = [o for cell in code for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 3  # the figures are there


def test_code_hash_sees_code_and_only_code():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("x = 1")])
    before = execute_script.code_sha256(nb)
    nb.cells[0].source = "# another title"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="out")]
    assert execute_script.code_sha256(nb) == before
    nb.cells[1].source = "x = 2"
    assert execute_script.code_sha256(nb) != before


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
