"""Regenerate every committed figure in figures/ from scratch, offline, on a CPU machine.

Usage: python figures/make_figures.py [--quick] [--only NAME ...]

Each figure is made by real `condense` commands (run one at a time in subprocesses, so that two
large models are never in memory at once); the exact commands, their wall time, CPU time and
peak memory are written beside it as <figure>.txt. Random-init probe runs go to figures/runs/
(not committed); real-weight runs go to figures/runs-real/ (committed: layers.csv,
histograms.npz, run.json), with their trend numbers in figures/runs-real/runs.csv. Runs with
equal settings are reused between figures. --quick probes fewer, shorter sequences (a smoke test;
its real-weight runs go to figures/runs-quick/, not committed). Real-weight figures need the
offline aliases: `make models`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
REAL_DECODERS = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
ENCODERS = ["minilm-l6", "mpnet-base"]


def condense(*args: str) -> list[str]:
    return [sys.executable, "-m", "condense", *args]


def real_run_folder(model: str, quick: bool) -> Path:
    """Where a real-weight probe of ``model`` goes: the folder `condense compare --runs-dir` reuses."""
    return HERE / ("runs-quick" if quick else "runs-real") / f"{model}__builtin"


def figure_jobs(quick: bool) -> list[tuple[str, list[str], list[list[str]]]]:
    """(figure file, the real-weight models it needs probed first, the commands that make it)."""
    real = ["--num-seqs", "4", "--max-length", "128"] if quick else ["--num-seqs", "32", "--max-length", "512"]
    rand = ["--num-seqs", "2", "--max-length", "64"] if quick else ["--num-seqs", "8", "--max-length", "256"]
    family = ["gpt2", "gpt2-medium"] if quick else ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    real_runs = str(real_run_folder("x", quick).parent)
    qwen = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    jobs = []
    figure = "qwen2.5-coder_0.5b_vs_1.5b.png"
    jobs.append((figure, qwen, [condense("compare", *qwen, *real, "--runs-dir", real_runs, "--out",
                                         str(HERE / figure), "-q")]))
    figure = "minilm-l6_vs_mpnet-base.png"
    jobs.append((figure, ENCODERS, [condense("compare", *ENCODERS, *real, "--runs-dir", real_runs, "--out",
                                             str(HERE / figure), "-q")]))
    figure = "real_decoders_by_size.png"
    jobs.append((figure, REAL_DECODERS, [condense(
        "family", *REAL_DECODERS, *real, "--runs-dir", real_runs, "--title",
        "real decoders of three families (SmolLM2, Gemma 3, Qwen2.5-Coder)", "--out", str(HERE / figure), "-q")]))
    for model in ("smollm2-135m", "minilm-l6"):
        figure = f"{model}_heatmap.png"
        jobs.append((figure, [model], [condense("plot", str(real_run_folder(model, quick)), "--out",
                                                str(HERE / figure))]))
    figure = "gpt2_vs_gpt2-xl_random_init.png"
    jobs.append((figure, [], [condense("compare", "gpt2", "gpt2-xl", "--init", "random", *rand, "--runs-dir",
                                       str(RUNS), "--out", str(HERE / figure), "-q")]))
    figure = "gpt2_family_random_init.png"
    jobs.append((figure, [], [condense("family", *family, "--init", "random", *rand, "--runs-dir", str(RUNS),
                                       "--out", str(HERE / figure), "-q")]))
    return jobs


def probe_command(model: str, quick: bool) -> list[str]:
    real = ["--num-seqs", "4", "--max-length", "128"] if quick else ["--num-seqs", "32", "--max-length", "512"]
    return condense("probe", model, *real, "--out", str(real_run_folder(model, quick)), "-q")


def run_measured(command: list[str]) -> dict[str, float]:
    """Run ``command`` to completion; its wall seconds, CPU seconds and peak resident memory (MiB)."""
    start = time.perf_counter()
    pid = subprocess.Popen(command).pid
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {shlex.join(command)}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024}


def write_summary(folder: Path, costs: dict[str, dict[str, float]]) -> None:
    """runs.csv: one row per real-weight run with its trend numbers, what it was and what it cost
    (not summary.csv, which would make the folder look like a sweep to `condense paper check`)."""
    import pandas as pd

    from condense.metrics import last_layers_means

    rows = []
    for run_json in sorted(folder.glob("*/run.json")):
        run = json.loads(run_json.read_text())
        trend = run.get("trend", {})
        layers = pd.read_csv(run_json.parent / "layers.csv")
        across = ({"last_half_cross_mean_cos": round(last_layers_means(layers["cross_mean_cos"].to_numpy())["last_half"], 4),
                   "last_cross_mean_cos": round(float(layers["cross_mean_cos"].iloc[-1]), 4),
                   "last_mean_cos": round(float(layers["mean_cos"].iloc[-1]), 4)}
                  if "cross_mean_cos" in layers else {})
        rows.append({"run": run_json.parent.name, "model": run["model"], "label": run.get("label"),
                     "quantization": run.get("quantization") or "none", "model_type": run["model_type"],
                     "layers": run["num_layers"], "hidden_size": run["hidden_size"], "parameters": run["parameters"],
                     "sequences": run["counts"]["sequences"], "tokens": run["counts"]["tokens"],
                     "spearman": round(trend["spearman"], 4), "kendall": round(trend["kendall"], 4),
                     "last_half_mean_cos": round(trend["last_half"], 4), **across,
                     **{f"probe_{k}": round(v) for k, v in costs.get(run["model"], {}).items()}})
    if rows:
        with (folder / "runs.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: (r["model_type"] in ("bert", "mpnet"), r["parameters"])))


def shown(command: list[str], cost: dict[str, float], note: str = "") -> str:
    """A command as a user would type it, with what it cost."""
    text = shlex.join(["condense", *command[3:]]).replace(str(HERE.parent) + "/", "")
    return f"{text}    # {cost['wall_s']:.0f} s wall, {cost['cpu_s']:.0f} s CPU, peak {cost['peak_mib']:.0f} MiB{note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter sequences")
    parser.add_argument("--only", nargs="+", metavar="FIGURE", help="make only these figures (file names)")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="keep real-weight runs already in the runs folder (their recorded cost is shown)")
    args = parser.parse_args()
    jobs = [j for j in figure_jobs(args.quick) if not args.only or j[0] in args.only]
    costs_file = real_run_folder("x", args.quick).parent / "probe_costs.json"
    costs = json.loads(costs_file.read_text()) if costs_file.exists() else {}
    probed_now: set[str] = set()
    total = time.perf_counter()
    for name, models, command in jobs:
        lines, wall = [], 0.0
        for model in models:  # one probe per process: two large models are never in memory at once
            command_p = probe_command(model, args.quick)
            reuse = model in probed_now or (args.reuse_runs and model in costs
                                            and (real_run_folder(model, args.quick) / "run.json").exists())
            if not reuse:
                costs[model] = run_measured(command_p)
                probed_now.add(model)
                costs_file.parent.mkdir(parents=True, exist_ok=True)
                costs_file.write_text(json.dumps(costs, indent=2) + "\n")
                wall += costs[model]["wall_s"]
            lines.append(shown(command_p, costs[model], " (run made earlier, reused)" if reuse else ""))
        for step in command:
            cost = run_measured(step)
            wall += cost["wall_s"]
            lines.append(shown(step, cost))
        (HERE / name).with_suffix(".txt").write_text(
            f"Made by these commands, one at a time, on a shared 2-core CPU machine (the figure command reuses "
            f"the probe runs above; wall time of this invocation: {wall:.0f} s):\n" + "\n".join(lines) + "\n")
        print(f"{name}: {wall:.0f} s")
    write_summary(real_run_folder("x", args.quick).parent, costs)
    print(f"all figures: {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
