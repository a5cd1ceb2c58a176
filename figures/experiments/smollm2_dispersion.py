"""Experiment (a): SmolLM2-135M fine-tuned on the built-in corpus with and without angular spread.

All runs share the seed, data order, steps and learning rate; they differ only in the loss:
``lm_loss`` vs ``lm_loss + coeff * angular_spread`` over the outputs of all 30 blocks, with the
authors' example coefficient 0.1 and a ten times stronger 1.0. Before
and after, the held-out probe gives the mean pairwise cosine of the last half of the layers and
the held-out LM loss. Run from the repository root:

    python figures/experiments/smollm2_dispersion.py

Writes figures/experiments/smollm2_dispersion.{csv,json,png} (the run folders, with their
540 MB checkpoints, go to results/experiments/smollm2_dispersion/) and prints its run time.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from condense.plotting.steps import steps_figure  # noqa: E402
from condense.training import finetune  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent.parent / "results" / "experiments" / "smollm2_dispersion"
SETTINGS = {"corpus": "builtin", "heldout": 0.2, "steps": 40, "lr": 1e-4, "batch_size": 4, "seq_len": 128,
            "seed": 0, "probe_every": 10, "probe_seqs": 16}
VARIANTS = {"none": {"dispersion": "none"},
            "angular_spread_0.1": {"dispersion": "angular_spread", "coeff": 0.1, "where": "all"},
            "angular_spread_1": {"dispersion": "angular_spread", "coeff": 1.0, "where": "all"}}
LABELS = ["SmolLM2-135M, LM loss only", "SmolLM2-135M, LM loss + 0.1 x angular spread (all blocks)",
          "SmolLM2-135M, LM loss + 1.0 x angular spread (all blocks)"]


def main() -> None:
    started = time.perf_counter()
    shutil.rmtree(RUNS, ignore_errors=True)
    runs, seconds = {}, {}
    for name, extra in VARIANTS.items():
        t0 = time.perf_counter()
        runs[name] = finetune("smollm2-135m", RUNS / name, device="cpu", quiet=True,
                              baseline=RUNS / "none" if name != "none" else None, **SETTINGS, **extra)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {seconds[name]:.0f} s")

    table = pd.concat([r.probes.assign(run=name) for name, r in runs.items()])
    table = table[["run", *runs["none"].probes.columns]]
    table.to_csv(HERE / "smollm2_dispersion.csv", index=False, float_format="%.6f")
    summary = {
        name: {when: run.probes.iloc[i][["heldout_lm_loss", "mean_cos_last_half", "mean_cos_last", "spearman"]]
               .round(6).to_dict() for when, i in (("before", 0), ("after", -1))}
        for name, run in runs.items()
    }
    total = round(time.perf_counter() - started, 1)
    (HERE / "smollm2_dispersion.json").write_text(json.dumps({
        "model": "smollm2-135m", "settings": SETTINGS, "variants": VARIANTS, "summary": summary,
        "data": runs["none"].manifest["data"], "run_seconds": seconds, "total_seconds": total,
        "versions": runs["none"].manifest["versions"]}, indent=2) + "\n")
    fig = steps_figure(list(runs.values()), labels=LABELS)
    fig.savefig(HERE / "smollm2_dispersion.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    print(table.to_string(index=False, float_format="%.4f"))
    print(f"total run time: {total:.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
