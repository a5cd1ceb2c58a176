"""Depth trends of per-layer statistics, their bootstrap uncertainty, and Gaussian baselines."""

from __future__ import annotations

import math

import numpy as np
import torch

from condense.metrics.streaming import PooledCosineAccumulator, TokenGeometryAccumulator

__all__ = ["depth_trend", "last_layers_means", "bootstrap_mean_cos", "gaussian_baseline"]


def depth_trend(layers: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of ``values`` against ``layers``, NaN layers left out.

    rho: Pearson's correlation of the average ranks (ties share the mean of their ranks);
    tau-b = (P - Q) / sqrt((n0 - n1)(n0 - n2)) over the n0 = n(n - 1)/2 pairs, P concordant, Q
    discordant, n1 and n2 the pairs tied in ``layers`` and in ``values`` (scipy's definitions, in
    numpy: importing scipy.stats would cost every probe 0.6 s of start-up).
    +1: the statistic grows steadily with depth (condensation); negative: dispersion.
    NaN with fewer than 3 finite layers or constant values (or layers).
    """
    layers, values = np.asarray(layers, float), np.asarray(values, float)
    ok = np.isfinite(values)
    x, y = layers[ok], values[ok]
    if len(x) < 3 or np.ptp(y) == 0 or np.ptp(x) == 0:
        return {"spearman": math.nan, "kendall": math.nan}
    rho = np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1]
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    tau = float(np.sum(dx * dy)) / math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return {"spearman": float(rho), "kendall": tau}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return ((last - counts + 1 + last) / 2)[inverse]


def last_layers_means(values: np.ndarray) -> dict[str, float]:
    """Mean of the last N values for N = 1..5 (``last1``..``last5``) and half of them (``last_half``)."""
    values = np.asarray(values, float)
    out = {f"last{n}": float(values[-n:].mean()) for n in range(1, 6) if n <= len(values)}
    out["last_half"] = float(values[-max(1, len(values) // 2):].mean()) if len(values) else math.nan
    return out


def bootstrap_mean_cos(
    layers: np.ndarray,
    seq_sums: np.ndarray,
    seq_counts: np.ndarray,
    resamples: int,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, np.ndarray | tuple[float, float]]:
    """Percentile bootstrap over sequences for the pooled mean cosine and its depth trend.

    seq_sums, seq_counts: [L, n_seqs] sums of pair cosines and pair counts per layer and sequence.
    Each resample draws n_seqs sequences with replacement (the same draw for every layer, so
    layers stay paired) and recomputes mean_cos = sum / count per layer, then Spearman and
    Kendall. Returns ``mean_cos_ci`` [L, 2] and ``spearman_ci``, ``kendall_ci`` (low, high).
    """
    rng = np.random.default_rng(seed)
    n = seq_sums.shape[1]
    idx = rng.integers(0, n, size=(resamples, n))
    # counts of each sequence in each resample: [K, n]; mean_cos [K, L]
    weights = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)
    means = (weights @ seq_sums.T) / (weights @ seq_counts.T)
    alpha = (1 - level) / 2
    out: dict[str, np.ndarray | tuple[float, float]] = {
        "mean_cos_ci": np.quantile(means, [alpha, 1 - alpha], axis=0).T
    }
    trends = [depth_trend(layers, m) for m in means]
    for key in ("spearman", "kendall"):
        vals = np.array([t[key] for t in trends])
        vals = vals[np.isfinite(vals)]
        out[f"{key}_ci"] = (
            tuple(float(v) for v in np.quantile(vals, [alpha, 1 - alpha])) if len(vals) else (math.nan, math.nan)
        )
    return out


def gaussian_baseline(n_tokens: int, dim: int, n_seqs: int = 8, seed: int = 0) -> dict[str, float]:
    """The layer statistics for isotropic Gaussian token vectors of the same (N, D).

    Closed forms where they exist: mean cosine 0, std 1/sqrt(D) (E[c^2] = 1/D for independent
    isotropic directions), mean pair angle 90 degrees. Everything else (cone half-angle, MEV,
    effective rank, ...) is simulated on ``n_seqs`` seeded sequences through the same
    accumulators the probe uses.
    """
    if n_tokens < 2:
        return {}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_seqs, n_tokens, dim, generator=gen)
    mask = torch.ones(n_seqs, n_tokens, dtype=torch.bool)
    geometry = TokenGeometryAccumulator(dim, spectrum_seqs=n_seqs)
    geometry.update(x, mask, torch.arange(n_tokens).expand(n_seqs, -1))
    cosine = PooledCosineAccumulator()
    cosine.update(x / x.norm(dim=-1, keepdim=True), mask)
    sim = {**cosine.finalize().columns, **geometry.finalize()}
    out = {k: sim[k] for k in ("cone_half_angle_mean_deg", "cone_log10_sphere_fraction", "mev",
                               "effective_rank", "hf_lf_ratio", "q05_cos", "q95_cos")}
    out.update(mean_cos=0.0, std_cos=1 / math.sqrt(dim), mean_pair_angle_deg=90.0)
    return out
