"""Several runs in one figure: side-by-side comparison, and a model family with its trend panel."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

from condense.plotting.heatmap import draw_heatmap

if TYPE_CHECKING:
    from condense.results import ProbeResult

__all__ = ["compare_figure", "family_figure", "order_by_size", "distinct_labels", "with_labels"]

_PANEL_W, _PANEL_H = 2.9, 2.5


def distinct_labels(results: Sequence["ProbeResult"]) -> list[str]:
    """Each result's ``name``, made distinct: names that collide get the folder of their
    checkpoint (run.json ``resolved``) appended, and labels that still collide ``#1``, ``#2``, ..."""
    names = [r.name for r in results]
    folders = [PurePath(str(r.run.get("resolved") or "")).parent.name for r in results]
    counts = Counter(names)
    labels = [f"{n} ({f})" if counts[n] > 1 and f else n for n, f in zip(names, folders)]
    counts, seen = Counter(labels), Counter()
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] += 1
            labels[i] = f"{label} #{seen[label]}"
    return labels


def with_labels(results: Sequence["ProbeResult"], labels: Sequence[str] | None = None) -> list["ProbeResult"]:
    """Copies of ``results`` whose ``label`` is ``labels[i]`` (the user's, verbatim) or, without
    ``labels``, :func:`distinct_labels`. ValueError when the counts differ."""
    if labels is not None and len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} runs; give one label per run")
    chosen = list(labels) if labels is not None else distinct_labels(results)
    return [dataclasses.replace(r, label=label) for r, label in zip(results, chosen)]


def order_by_size(results: Sequence["ProbeResult"]) -> list["ProbeResult"]:
    """Results sorted by parameter count (run.json ``parameters``), smallest first."""
    return sorted(results, key=lambda r: r.run.get("parameters") or 0)


def _figure_with_heatmap_row(results, columns: int, min_width: float, vmax: float, ylim):
    """A two-row figure whose top row holds one heatmap per result on one shared colour bar."""
    n = len(results)
    fig = plt.figure(figsize=(max(_PANEL_W * n + 1.0, min_width), _PANEL_H * 2 + 0.6), layout="constrained")
    grid = fig.add_gridspec(2, columns)
    top = [fig.add_subplot(grid[0, i]) for i in range(n)]
    meshes = [draw_heatmap(r, ax, vmax=vmax, ylim=ylim) for r, ax in zip(results, top)]
    for ax in top:
        ax.grid(False)
    for ax in top[1:]:
        ax.set_ylabel("")
    fig.colorbar(meshes[-1], ax=top, label="density", fraction=0.025, pad=0.01)
    return fig, grid, top


def compare_figure(results: Sequence["ProbeResult"], vmax: float = 10.0, ylim=(-1.0, 1.0),
                   style: str = "whitegrid", labels: Sequence[str] | None = None):
    """Heatmaps side by side on one colour scale (top row), then two overlay panels:
    mean cosine similarity vs layer fraction (within a text solid, across texts dashed, where the
    runs have ``cross_mean_cos``), and mean cone half-angle vs layer fraction.

    Each heatmap's title carries the run's Spearman and Kendall trend. ``labels``: one per
    result, shown verbatim (default: :func:`distinct_labels`). Returns the Figure.
    """
    if len(results) < 1:
        raise ValueError("compare_figure needs at least one result")
    results = with_labels(results, labels)
    n = len(results)
    with sns.axes_style(style):
        fig, grid, _ = _figure_with_heatmap_row(results, max(n, 2), 7.0, vmax, ylim)
        half = max(n, 2) // 2
        cos_ax = fig.add_subplot(grid[1, :half])
        angle_ax = fig.add_subplot(grid[1, half:])
        colours = sns.color_palette("colorblind", n)
        for r, c in zip(results, colours):
            x = r.layers["layer_fraction"]
            cos_ax.plot(x, r.layers["mean_cos"], marker="o", ms=3, color=c, label=r.name)
            if "cross_mean_cos" in r.layers:
                cos_ax.plot(x, r.layers["cross_mean_cos"], ls="--", lw=1.0, color=c)
            angle_ax.plot(x, r.layers["cone_half_angle_mean_deg"], marker="o", ms=3, color=c, label=r.name)
        cos_ax.set(xlabel="layer fraction", ylabel="mean cosine similarity", title="condensation by depth")
        angle_ax.set(xlabel="layer fraction", ylabel="cone half-angle (deg, mean)", title="cone half-angle")
        handles, names = cos_ax.get_legend_handles_labels()
        if any("cross_mean_cos" in r.layers for r in results):  # the line styles, in grey
            handles += [Line2D([], [], color="grey"), Line2D([], [], color="grey", ls="--", lw=1.0)]
            names += ["within a text", "across texts"]
        cos_ax.legend(handles, names, fontsize=7, frameon=True, framealpha=0.85)
    return fig


def family_figure(results: Sequence["ProbeResult"], vmax: float = 10.0, ylim=(-1.0, 1.0),
                  style: str = "whitegrid", labels: Sequence[str] | None = None, title: str | None = None):
    """A model family ordered by parameter count: heatmaps in a row, then the trend panel
    (Spearman's rho and Kendall's tau-b of mean cosine vs layer, per model, as the paper's panel b).

    ``labels``: one per result in the order given (they follow their runs when sorted);
    ``title``: the trend panel's title (default: "condensation trend by model size").
    """
    results = order_by_size(with_labels(results, labels))
    n = len(results)
    with sns.axes_style(style):
        fig, grid, _ = _figure_with_heatmap_row(results, max(n, 1), 6.0, vmax, ylim)
        trend_ax = fig.add_subplot(grid[1, :])
        x = np.arange(n)
        for key, style, label in (("spearman", dict(marker="o", ms=8, ls="-"), "Spearman ρ"),
                                  ("kendall", dict(marker="s", ms=4, ls="--"), "Kendall τ-b")):
            values = [r.trend.get(key, math.nan) for r in results]
            trend_ax.plot(x, values, label=label, **style)  # dashed over solid: equal values stay visible
            low = [r.trend.get(f"{key}_ci_low") for r in results]
            high = [r.trend.get(f"{key}_ci_high") for r in results]
            if all(v is not None for v in low + high):
                trend_ax.fill_between(x, low, high, alpha=0.15)
        trend_ax.axhline(0, color="grey", lw=0.8)
        trend_ax.set_xticks(x, [f"{r.name}\n{_params(r)}" for r in results], fontsize=8)
        trend_ax.set(ylim=(-1.05, 1.05), ylabel="trend of mean cosine vs depth",
                     title=f"{title or 'condensation trend by model size'} (+1: grows with depth)")
        trend_ax.legend(fontsize=8, frameon=False, loc="lower left")
    return fig


def _params(result: "ProbeResult") -> str:
    p = result.run.get("parameters")
    if not p:
        return ""
    return f"{p / 1e9:.2f}B" if p >= 1e9 else f"{p / 1e6:.0f}M"
