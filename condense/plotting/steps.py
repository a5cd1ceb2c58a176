"""The paper's training figure: heatmaps over probe steps, one row per run, plus their curves.

Each row shows up to ``max_heatmaps`` probe steps of one finetune run (always the first and the
last) on one shared colour scale; two panels beside the rows plot every probe step of every run:
the mean pairwise cosine of the last half of the layers, and the held-out LM loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from condense.plotting.heatmap import draw_heatmap

if TYPE_CHECKING:
    from condense.training.run import FinetuneRun

__all__ = ["shown_steps", "steps_figure"]

_RUN_COLOURS = ["#1f4e99", "#c0392b", "#2e8b57", "#8e44ad", "#d68910"]


def shown_steps(steps: Sequence[int], max_heatmaps: int) -> list[int]:
    """Up to ``max_heatmaps`` of ``steps`` (sorted), evenly spread, first and last always kept."""
    steps = sorted(steps)
    if len(steps) <= max_heatmaps:
        return steps
    picks = np.unique(np.round(np.linspace(0, len(steps) - 1, max_heatmaps)).astype(int))
    return [steps[i] for i in picks]


def steps_figure(runs: Sequence["FinetuneRun"], max_heatmaps: int = 6, vmax: float = 10.0,
                 labels: Sequence[str] | None = None):
    """Figure of ``runs`` (one row each: heatmaps at probe steps) and their probe curves.

    Colour = density of pairwise cosine similarity ("Reds", 0..``vmax``, one colour bar for all
    panels; the paper uses 0..10); dashed line = per-layer mean. ``labels`` default to each
    run's ``label``. Returns the matplotlib Figure.
    """
    labels = list(labels) if labels is not None else [r.label for r in runs]
    picked = [shown_steps(list(r.results), max_heatmaps) for r in runs]
    k = max(len(p) for p in picked)
    low = min(float(res.layers["q05_cos"].min()) for r in runs for res in r.results.values())
    ylim = (max(-1.0, min(-0.25, math.floor(low * 4) / 4)), 1.0)
    with plt.rc_context({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10}):
        fig = plt.figure(figsize=(2.3 * k + 7.8, 2.9 * len(runs) + 0.3), layout="constrained")
        left, right = fig.subfigures(1, 2, width_ratios=[2.3 * k + 0.8, 7.0], wspace=0.02)
        rows = left.subfigures(len(runs), 1) if len(runs) > 1 else [left]
        for row, run, steps, label in zip(rows, runs, picked, labels):
            axes = np.atleast_1d(row.subplots(1, k, sharey=True))
            for col, ax in enumerate(axes):
                if col >= len(steps):
                    ax.set_visible(False)
                    continue
                res = run.results[steps[col]]
                mesh = draw_heatmap(res, ax, vmax=vmax, ylim=ylim,
                                    title=f"step {steps[col]}  (ρ {_signed(res.trend.get('spearman'))})")
                if col:
                    ax.set_ylabel("")
            row.colorbar(mesh, ax=list(axes), label="density", fraction=0.04, pad=0.02)
            row.suptitle(label, x=0.01, ha="left", fontsize=11, fontweight="bold")
        cos_ax, loss_ax = right.subplots(1, 2)
        for i, (run, label) in enumerate(zip(runs, labels)):
            # Marker and dash differ per run too, so that curves lying on top of each other stay visible.
            style = {"color": _RUN_COLOURS[i % len(_RUN_COLOURS)], "marker": "osD^v"[i % 5], "ms": 5, "lw": 1.6,
                     "ls": ["-", "--", ":", "-."][i % 4], "mfc": "none" if i else None, "label": label}
            cos_ax.plot(run.probes["step"], run.probes["mean_cos_last_half"], **style)
            loss_ax.plot(run.probes["step"], run.probes["heldout_lm_loss"], **style)
        cos_ax.set(title="mean cosine, last half of layers", xlabel="step", ylabel="mean pairwise cosine")
        loss_ax.set(title="held-out LM loss", xlabel="step", ylabel="cross-entropy (nats / token)")
        for ax in (cos_ax, loss_ax):
            ax.grid(alpha=0.3)
        right.legend(*cos_ax.get_legend_handles_labels(), loc="outside lower center", fontsize=9, frameon=False)
        right.suptitle("held-out probes", x=0.02, ha="left", fontsize=11, fontweight="bold")
    return fig


def _signed(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"
