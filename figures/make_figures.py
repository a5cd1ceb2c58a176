"""Regenerate every committed figure in figures/ from scratch, offline, on a CPU machine.

Usage: python figures/make_figures.py [--quick]

Each figure is made by a real `condense` command (run in a subprocess); the exact command is
written beside it as <figure>.txt. Probe runs go to figures/runs/ (not committed) and are reused
between figures with equal settings. --quick probes fewer, shorter sequences (for a smoke test).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"


def condense(*args: str) -> list[str]:
    return [sys.executable, "-m", "condense", *args]


def figure_jobs(quick: bool) -> list[tuple[str, list[list[str]]]]:
    """(figure file, the commands that make it)."""
    real = ["--num-seqs", "4", "--max-length", "128"] if quick else ["--num-seqs", "32", "--max-length", "512"]
    rand = ["--num-seqs", "2", "--max-length", "64"] if quick else ["--num-seqs", "8", "--max-length", "256"]
    family = ["gpt2", "gpt2-medium"] if quick else ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    jobs = []
    for model in ("smollm2-135m", "minilm-l6"):
        figure = f"{model}_heatmap.png"
        jobs.append((figure, [condense("probe", model, *real, "--out", str(RUNS / model), "-q"),
                              condense("plot", str(RUNS / model), "--out", str(HERE / figure))]))
    figure = "gpt2_vs_gpt2-xl_random_init.png"
    jobs.append((figure, [condense("compare", "gpt2", "gpt2-xl", "--init", "random", *rand, "--runs-dir",
                                   str(RUNS), "--out", str(HERE / figure), "-q")]))
    figure = "gpt2_family_random_init.png"
    jobs.append((figure, [condense("family", *family, "--init", "random", *rand, "--runs-dir", str(RUNS),
                                   "--out", str(HERE / figure), "-q")]))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter sequences")
    args = parser.parse_args()
    total = time.perf_counter()
    for name, command in figure_jobs(args.quick):
        start = time.perf_counter()
        for step in command:
            subprocess.run(step, check=True)
        seconds = time.perf_counter() - start
        shown = "\n".join(shlex.join(["condense", *step[3:]]).replace(str(HERE.parent) + "/", "") for step in command)
        (HERE / name).with_suffix(".txt").write_text(f"Made by ({seconds:.0f} s on this machine):\n{shown}\n")
        print(f"{name}: {seconds:.0f} s")
    print(f"all figures: {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
