"""Execute the notebooks as a user would (the real offline SmolLM2-135M) and save them with their outputs.

    python notebooks/execute.py                    # both notebooks (make notebooks)
    python notebooks/execute.py explore_condensation.ipynb

Each notebook runs top to bottom in a fresh kernel from a temporary folder, with the defaults of
its first cell (any CONDENSE_NOTEBOOK_* variable is removed first) and progress bars off, and is
written back in place with its outputs and, in its metadata under ``condense``, the SHA-256 of its
code cells at that time: tests/test_notebook.py fails when a code cell has changed since, so the
committed outputs are never those of other code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("explore_condensation.ipynb", "in_memory_and_training.ipynb")
# progress bars (GGUF de-quantisation, datasets' map) and tqdm's "IProgress not found" warning are
# not results: the saved outputs go without them
QUIET_OUTPUTS = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "PYTHONWARNINGS": "ignore:IProgress not found"}


def code_sha256(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of a notebook's code cells, in order (markdown cells and outputs do not count)."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(path: Path, timeout: int = 1800) -> float:
    """Run ``path`` in a fresh kernel and write it back with outputs and metadata; the seconds it took."""
    import nbclient

    import condense

    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDENSE_NOTEBOOK_")}
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.update(QUIET_OUTPUTS)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="condense-notebook-run-") as folder:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": folder}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    seconds = time.perf_counter() - start
    nb.metadata["condense"] = {
        "code_sha256": code_sha256(nb),
        "executed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
        "condense_version": condense.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS, help="names in notebooks/ (default: both)")
    args = parser.parse_args(argv)
    for name in args.notebooks:
        path = HERE / Path(name).name
        print(f"{path.name}: {execute(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
