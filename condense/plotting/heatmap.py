"""The paper's layer x cosine-similarity density heatmap."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from condense.results import ProbeResult

__all__ = ["draw_heatmap", "heatmap_figure", "layer_edges"]


def layer_edges(fractions: np.ndarray) -> np.ndarray:
    """Cell edges on the x axis: midpoints between layer fractions, padded at both ends."""
    f = np.asarray(fractions, float)
    if len(f) == 1:
        return np.array([f[0] - 0.5, f[0] + 0.5])
    mid = (f[1:] + f[:-1]) / 2
    return np.concatenate([[f[0] - (mid[0] - f[0])], mid, [f[-1] + (f[-1] - mid[-1])]])


def draw_heatmap(result: "ProbeResult", ax, vmin: float = 0.0, vmax: float = 10.0, cmap: str = "Reds",
                 ylim: tuple[float, float] = (-1.0, 1.0), title: str | None = None):
    """Draw density (colour) of cosine similarity (y) per layer fraction (x) on ``ax``, with the mean
    cosine within a text (black dashed) and, where the run has it, across texts (blue dotted).

    Returns the QuadMesh so callers can share one colour bar. The paper uses "Reds" on 0..10.
    """
    x = layer_edges(result.layers["layer_fraction"].to_numpy())
    mesh = ax.pcolormesh(x, result.bin_edges, result.histograms.T, cmap=cmap, vmin=vmin, vmax=vmax,
                         shading="flat", rasterized=True)
    ax.plot(result.layers["layer_fraction"], result.layers["mean_cos"], color="black", lw=1.0, ls="--",
            label="mean, within a text")
    if "cross_mean_cos" in result.layers:  # runs before the cross-text columns have none
        ax.plot(result.layers["layer_fraction"], result.layers["cross_mean_cos"], color="tab:blue", lw=1.4,
                ls=":", label="mean, across texts")
    ax.set_ylim(*ylim)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("layer fraction")
    ax.set_ylabel("cosine similarity")
    rho, tau = result.trend.get("spearman", math.nan), result.trend.get("kendall", math.nan)
    ax.set_title(title if title is not None else f"{result.name}\nSpearman {_f(rho)}, Kendall {_f(tau)}",
                 fontsize=9)
    return mesh


def heatmap_figure(result: "ProbeResult", vmax: float = 10.0, cmap: str = "Reds",
                   ylim: tuple[float, float] = (-1.0, 1.0), style: str = "whitegrid",
                   figsize: tuple[float, float] = (4.2, 3.2), **kwargs: Any):
    """A one-panel figure with colour bar; ``style`` is a seaborn style name (darkgrid, whitegrid,
    dark, white, ticks), read from matplotlib's copies of seaborn's sheets: importing seaborn would
    cost every probe's heatmap 0.4 s (it imports scipy.stats)."""
    with _seaborn_style(style):
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        mesh = draw_heatmap(result, ax, vmax=vmax, cmap=cmap, ylim=ylim, **kwargs)
        ax.grid(False)
        fig.colorbar(mesh, ax=ax, label="density")
        if "cross_mean_cos" in result.layers:
            ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


@contextlib.contextmanager
def _seaborn_style(name: str) -> Iterator[None]:
    """Seaborn's style ``name`` for the figures drawn inside, from matplotlib's copy of its sheet.

    Restores only the keys the sheet sets: ``plt.style.context`` restores every rcParam, which also
    undoes what a backend sets up on its first figure (Jupyter's inline display stops showing figures).
    """
    sheet = matplotlib.style.library.get(f"seaborn-v0_8-{name}")
    if sheet is None:
        raise ValueError(f"unknown style {name!r}; use one of darkgrid, whitegrid, dark, white, ticks")
    before = {key: matplotlib.rcParams[key] for key in sheet}
    matplotlib.rcParams.update(sheet)
    try:
        yield
    finally:
        matplotlib.rcParams.update(before)


def _f(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"
