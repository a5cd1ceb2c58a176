"""Per-sequence geometry of a token matrix: pure functions of an ``[N, D]`` array.

Every function takes the N token vectors of one sequence (rows, D features each) as a numpy
array or torch tensor, computes in float64, and returns a Python float (or a 1-D array where
the docstring says so). None of them import transformers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "as_float64",
    "unit_rows",
    "pairwise_cosine",
    "mean_pairwise_cosine",
    "mean_pairwise_angle_deg",
    "cone_half_angles_deg",
    "dimension_rms_scaled",
    "singular_values",
    "max_explainable_variance",
    "singular_value_entropy",
    "effective_rank",
    "high_low_frequency_ratio",
    "token_norm_stats",
    "massive_token_mask",
    "cone_log10_sphere_fraction",
]

NORM_FLOOR = 1e-8
MASSIVE_FACTOR = 100.0


def as_float64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Return ``x`` as a float64 torch tensor of shape [N, D] (raises on other ranks)."""
    t = torch.as_tensor(x).to(torch.float64)
    if t.ndim != 2:
        raise ValueError(f"expected an [N, D] token matrix, got shape {tuple(t.shape)}")
    return t


def unit_rows(x: torch.Tensor, floor: float = NORM_FLOOR) -> torch.Tensor:
    """Rows scaled to unit length: ``x_i / max(||x_i||, floor)``. Shape preserved ([..., D])."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(floor)


def pairwise_cosine(x: np.ndarray | torch.Tensor, floor: float = NORM_FLOOR) -> torch.Tensor:
    """Cosine similarity matrix ``C_ij = <x_i, x_j> / (max(|x_i|, f) max(|x_j|, f))``.

    x: [N, D]; returns [N, N] float64, clipped to [-1, 1]. ``floor`` is 1e-8 by default; the
    paper's convention floors norms at 1e-3.
    """
    u = unit_rows(as_float64(x), floor)
    return (u @ u.T).clamp(-1.0, 1.0)


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[0]
    return c[~torch.eye(n, dtype=torch.bool, device=c.device)]


def mean_pairwise_cosine(x: np.ndarray | torch.Tensor, include_diagonal: bool = False) -> float:
    """Mean of C_ij over pairs i != j (or over all N^2 entries with ``include_diagonal``).

    x: [N, D], N >= 2. Identical vectors give 1; an orthonormal set gives 0; isotropic Gaussian
    vectors give 0 in expectation with standard deviation 1/sqrt(D) per pair.
    """
    c = pairwise_cosine(x)
    return float(c.mean() if include_diagonal else _off_diagonal(c).mean())


def mean_pairwise_angle_deg(x: np.ndarray | torch.Tensor) -> float:
    """Mean over pairs i != j of ``arccos(C_ij)`` in degrees (90 for orthogonal vectors)."""
    return float(torch.rad2deg(torch.arccos(_off_diagonal(pairwise_cosine(x)))).mean())


def cone_half_angles_deg(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Angle in degrees between each token and the sequence's mean direction.

    The mean direction is the normalised mean of the unit token vectors (the directional-
    statistics mean), so one huge-norm token (an attention sink) cannot define the axis alone.
    x: [N, D]; returns [N]. Vectors inside a cone of half-angle a around its axis, spread
    symmetrically, all give a.
    """
    u = unit_rows(as_float64(x))
    axis = unit_rows(u.mean(dim=0))
    return torch.rad2deg(torch.arccos((u @ axis).clamp(-1.0, 1.0))).numpy()


def dimension_rms_scaled(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Each feature column divided by its root-mean-square over the N tokens.

    ``x'_id = x_id / sqrt(mean_i x_id^2)``. Tames outlier feature dimensions (each dimension
    then carries the same energy) without centring, which would erase the cone by construction.
    x: [N, D]; returns [N, D] float64.
    """
    t = as_float64(x)
    return t / t.pow(2).mean(dim=0).sqrt().clamp_min(NORM_FLOOR)


def singular_values(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Singular values of the token matrix, descending. x: [N, D]; returns [min(N, D)]."""
    return torch.linalg.svdvals(as_float64(x)).numpy()


def max_explainable_variance(x: np.ndarray | torch.Tensor) -> float:
    """MEV = sigma_1^2 / sum_i sigma_i^2 of the (uncentred) token matrix. In [1/min(N,D), 1]."""
    s2 = singular_values(x) ** 2
    return float(s2[0] / s2.sum())


def singular_value_entropy(x: np.ndarray | torch.Tensor) -> float:
    """Shannon entropy (nats) of p_i = sigma_i / sum_j sigma_j. 0 for rank one, log(r) for r equal."""
    s = singular_values(x)
    p = s[s > 0] / s.sum()
    return float(-(p * np.log(p)).sum())


def effective_rank(x: np.ndarray | torch.Tensor) -> float:
    """exp(singular-value entropy) (Roy & Vetterli 2007). 1 for rank one, r for r equal sigmas."""
    return math.exp(singular_value_entropy(x))


def high_low_frequency_ratio(x: np.ndarray | torch.Tensor) -> float:
    """``||X - 1 mu^T||_2 / ||1 mu^T||_2`` with mu the mean token and ||.||_2 the spectral norm.

    ``||1 mu^T||_2 = sqrt(N) |mu|``. Small when every token is close to the mean token (a narrow
    cone of similar norms); infinite when the mean token is zero.
    """
    t = as_float64(x)
    mu = t.mean(dim=0)
    low = math.sqrt(t.shape[0]) * float(mu.norm())
    high = float(torch.linalg.matrix_norm(t - mu, ord=2))
    return high / low if low > 0 else math.inf


def token_norm_stats(x: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Euclidean norms of the N tokens: ``{"mean", "max", "max_over_median"}``."""
    n = as_float64(x).norm(dim=1)
    med = float(n.median())
    return {
        "mean": float(n.mean()),
        "max": float(n.max()),
        "max_over_median": float(n.max()) / med if med > 0 else math.inf,
    }


def massive_token_mask(x: np.ndarray | torch.Tensor, factor: float = MASSIVE_FACTOR) -> np.ndarray:
    """Tokens whose norm exceeds ``factor`` (100) x the median token norm. Returns bool [N]."""
    n = as_float64(x).norm(dim=1)
    return (n > factor * n.median()).numpy()


def cone_log10_sphere_fraction(half_angle_deg: float, dim: int) -> float:
    """log10 of the fraction of the unit sphere S^(D-1) inside a cone of the given half-angle.

    fraction(a) = int_0^a sin^(D-2)(t) dt / int_0^pi sin^(D-2)(t) dt, whose denominator is
    sqrt(pi) Gamma((D-1)/2) / Gamma(D/2). The numerator is integrated in log space (Simpson's
    rule on a 4001-point grid with log-sum-exp), so D in the thousands does not underflow.
    D = 2 gives a / pi; D = 3 gives (1 - cos a) / 2; a = 90 degrees gives 1/2 for every D.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    a = math.radians(min(max(half_angle_deg, 0.0), 180.0))
    if a == 0.0:
        return -math.inf
    if dim == 2:
        return math.log10(a / math.pi)
    t = np.linspace(0.0, a, 4001)
    with np.errstate(divide="ignore"):
        log_f = (dim - 2) * np.log(np.sin(t))
    w = np.ones_like(t)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    with np.errstate(divide="ignore"):
        log_terms = log_f + np.log(w * (t[1] - t[0]) / 3.0)
    log_num = float(np.logaddexp.reduce(log_terms))
    log_den = 0.5 * math.log(math.pi) + math.lgamma((dim - 1) / 2) - math.lgamma(dim / 2)
    return min((log_num - log_den) / math.log(10), 0.0)
