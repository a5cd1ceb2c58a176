"""Isotropy of a token sample: IsoScore, centred MEV, TwoNN intrinsic dimension, cross-text cosines.

Pure functions of an ``[N, D]`` array of N token vectors (numpy or torch), computed in float64 on
the CPU, returning Python floats (or arrays where said). Every one is biased by the sample size,
so each comes with its value for N isotropic Gaussian vectors in D dimensions
(:func:`gauss_isoscore`, :func:`gauss_mev_centred`, :func:`gauss_twonn_id`). :func:`sample_measures` computes them all from
one N x N Gram matrix of the centred rows, the cost that dominates (N^2 D multiply-adds).
None of them import transformers.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from condense.metrics.geometry import NORM_FLOOR, as_float64
from condense.metrics.spectrum import largest_eigenvalue
from condense.metrics.streaming import FINE_BINS, HIST_BINS

__all__ = [
    "TWONN_DISCARD",
    "isoscore",
    "mev_centred",
    "twonn_id",
    "cross_pair_index",
    "cross_text_cosines",
    "cross_text_cosine_histogram",
    "gauss_isoscore",
    "gauss_mev_centred",
    "gauss_twonn_id",
    "sample_measures",
]

TWONN_DISCARD = 0.1  # Facco et al. 2017: the largest ratios follow the Pareto law worst
ROW_BLOCK = 512  # rows per strip of an N x N product: strips of 512 x N float64 (16 MiB at N = 4096)
EIGEN_RTOL = 1e-10  # relative accuracy of the centred MEV's top eigenvalue


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """The smaller of the Gram matrix X_c X_c^T [N, N] and the scatter X_c^T X_c [D, D] of the centred
    rows: both hold the same nonzero eigenvalues, (N - 1) times those of the covariance."""
    xc = x - x.mean(dim=0)
    return xc @ xc.T if x.shape[0] <= x.shape[1] else xc.T @ xc


def _isoscore_of(gram: torch.Tensor, dim: int) -> float:
    """IsoScore from a matrix sharing the covariance's nonzero eigenvalues (up to a common scale)."""
    trace = float(gram.diagonal().sum())
    frob_sq = float(torch.linalg.matrix_norm(gram) ** 2)
    if dim < 2 or trace <= 0 or frob_sq <= 0:
        return math.nan
    return (trace * trace / frob_sq - 1.0) / (dim - 1)


def isoscore(x: np.ndarray | torch.Tensor) -> float:
    """IsoScore (Rudman et al. 2022) of the rows of ``x`` [N, D], as its reference computes it.

    The reference rotates the points onto their principal axes, takes the variance vector v (the
    D diagonal entries of the covariance, ddof 1, zeros past rank N - 1), rescales it to norm sqrt(D),
    measures the isotropy defect delta = |v_hat - 1| / sqrt(2 (D - sqrt(D))), the fraction of
    dimensions used phi = (D - delta^2 (D - sqrt(D)))^2 / D^2, and returns (D phi - 1) / (D - 1).
    Algebra reduces that to (PR - 1) / (D - 1) with the participation ratio PR = tr(C)^2 / |C|_F^2,
    computed here without an eigendecomposition (and on the N x N Gram matrix when N < D). Scale-
    invariant, so ddof does not change it. 1: isotropic; 0: one direction. NaN for N < 2, D < 2 or
    identical rows. Biased low by small N: isotropic Gaussians give about (N D / (N + D) - 1) / (D - 1).
    """
    x = as_float64(x)
    return _isoscore_of(_centred_gram(x), x.shape[1]) if x.shape[0] >= 2 else math.nan


def mev_centred(x: np.ndarray | torch.Tensor) -> float:
    """Centred maximum explainable variance lambda_1 / sum(lambda) of the covariance of ``x`` [N, D].

    The rows' mean is removed first (unlike :func:`condense.metrics.max_explainable_variance`, the
    uncentred MEV); the eigenvalues come from the smaller of the Gram and scatter matrices. 1: all
    variance along one direction; 1/D for isotropic data with N >> D. NaN for N < 2 or identical rows.
    """
    x = as_float64(x)
    if x.shape[0] < 2:
        return math.nan
    gram = _centred_gram(x)
    trace = float(gram.diagonal().sum())
    return largest_eigenvalue(gram, EIGEN_RTOL) / trace if trace > 0 else math.nan


def _duplicate_groups(x: torch.Tensor) -> torch.Tensor:
    """One id per row, equal for bitwise-equal rows: their distance is exactly 0, not Gram round-off.

    Only rows whose first entry ties with another row's can be equal; ``unique`` runs on those alone
    (sorting all N rows of D entries would cost a second a layer at N = D = 4096).
    """
    n = x.shape[0]
    groups = torch.arange(n)
    order = torch.sort(x[:, 0]).indices
    ties = x[order[1:], 0] == x[order[:-1], 0]
    candidate = torch.zeros(n, dtype=torch.bool)
    candidate[order[1:][ties]] = True
    candidate[order[:-1][ties]] = True
    rows = candidate.nonzero().squeeze(1)
    if len(rows):
        groups[rows] = n + torch.unique(x[rows], dim=0, return_inverse=True)[1]
    return groups


def _two_nearest(gram: torch.Tensor, groups: torch.Tensor, sizes: list[int]) -> dict[int, torch.Tensor]:
    """Distances r1, r2 [m, 2] from each of the first m rows to its two nearest others among the first
    m rows, for each m in ``sizes``, from the centred Gram matrix (|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij),
    strip by strip. Row i's neighbours are ranked by G_jj - 2 G_ij (its own G_ii added to the two
    chosen only), and only columns below the largest size are formed."""
    n = gram.shape[0]
    diag = gram.diagonal()
    # groups >= n mark rows whose first entry ties another's; only those can be exact duplicates
    duplicated = bool((groups >= n).any()) and torch.unique(groups).numel() < n
    found = {m: [] for m in sizes}
    width = max(sizes, default=0)
    for lo in range(0, width, ROW_BLOCK):
        hi = min(lo + ROW_BLOCK, width)
        ranked = torch.add(diag[None, :width], gram[lo:hi, :width], alpha=-2.0)
        if duplicated:  # distance exactly 0, not round-off: G_ii + ranked = 0
            same = groups[lo:hi, None] == groups[None, :width]
            ranked = torch.where(same, -diag[lo:hi, None], ranked)
        rows = torch.arange(hi - lo)
        ranked[rows, rows + lo] = math.inf  # a point is not its own neighbour
        for m in sizes:
            if lo < m:
                end = min(hi, m)
                nearest = ranked[: end - lo, :m].topk(2, dim=1, largest=False).values
                found[m].append(nearest + diag[lo:end, None])
    return {m: torch.cat(parts).clamp_min_(0.0).sqrt_() for m, parts in found.items() if parts}


def _twonn_fit(r: torch.Tensor, discard_fraction: float) -> float:
    """TwoNN's fit on the [m, 2] nearest distances: slope through the origin of -log(1 - i/N) on log mu."""
    r1, r2 = r[:, 0], r[:, 1]
    keep = r1 > 0  # a point with a duplicate has r1 = 0 and no finite ratio
    mu = torch.sort(r2[keep] / r1[keep]).values
    n = mu.numel()
    n_fit = int(math.floor(n * (1.0 - discard_fraction) + 1e-9))
    if n_fit < 2:
        return math.nan
    log_mu = torch.log(mu[:n_fit])
    target = -torch.log1p(-torch.arange(1, n_fit + 1, dtype=torch.float64) / n)
    denominator = float(log_mu.square().sum())
    return float((log_mu * target).sum()) / denominator if denominator > 0 else math.nan


def _check_fraction(discard_fraction: float) -> None:
    if not 0.0 < discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must lie in (0, 1), got {discard_fraction}")


def twonn_id(x: np.ndarray | torch.Tensor, discard_fraction: float = TWONN_DISCARD) -> float:
    """Intrinsic dimension of the rows of ``x`` [N, D] by TwoNN (Facco et al. 2017).

    For each point the ratio mu_i = r2 / r1 of its Euclidean distances to its two nearest neighbours;
    points with r1 = 0 (an exact duplicate) are dropped, leaving N. With mu sorted ascending, the
    ``discard_fraction`` largest are dropped and d is the least-squares slope through the origin of
    -log(1 - i / N) against log mu_(i), i = 1 .. floor(N (1 - discard_fraction)). NaN with fewer than
    two ratios to fit. Biased low in high dimension at small N (isotropic Gaussians: see
    :func:`gauss_twonn_id`).
    """
    _check_fraction(discard_fraction)
    x = as_float64(x)
    n = x.shape[0]
    if n < 3:
        return math.nan
    xc = x - x.mean(dim=0)
    return _twonn_fit(_two_nearest(xc @ xc.T, _duplicate_groups(x), [n])[n], discard_fraction)


def cross_pair_index(text_index: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
    """The unordered pairs i < j of rows from different texts, strip by strip: for each strip of rows
    [lo, hi) (``ROW_BLOCK`` rows), the flat indices [p] int64 of those pairs in a row-major
    [hi - lo, N - lo] array of rows [lo, hi) against rows [lo, N). ``text_index`` [N]. It depends on
    the texts alone, so the layers of one token sample share it (:func:`sample_measures`' ``pairs``)."""
    texts = torch.as_tensor(text_index, dtype=torch.int64)
    n = texts.shape[0]
    index = []
    for lo in range(0, n, ROW_BLOCK):
        hi = min(lo + ROW_BLOCK, n)
        rows, cols = torch.arange(lo, hi)[:, None], torch.arange(lo, n)[None, :]
        pairs = (cols > rows) & (texts[lo:hi, None] != texts[None, lo:])
        index.append(pairs.reshape(-1).nonzero().squeeze(1))
    return index


def _cross_blocks(cosine_strip, pairs: list[torch.Tensor]):
    """Yield, strip by strip, the cosines (clipped to [-1, 1]) of the pairs of :func:`cross_pair_index`.

    ``cosine_strip(lo, hi)``: cosines of rows [lo, hi) against rows [lo, N), float64 [hi - lo, N - lo].
    """
    for strip, index in enumerate(pairs):
        lo = strip * ROW_BLOCK
        yield cosine_strip(lo, lo + ROW_BLOCK).reshape(-1).take(index).clamp_(-1.0, 1.0)


def _unit_strips(unit: np.ndarray | torch.Tensor, text_index: np.ndarray | torch.Tensor):
    unit = as_float64(unit)
    texts = torch.as_tensor(text_index, dtype=torch.int64)
    if texts.shape != (unit.shape[0],):
        raise ValueError(f"text_index must have one entry per row ({unit.shape[0]}), got shape {tuple(texts.shape)}")
    return _cross_blocks(lambda lo, hi: unit[lo:hi] @ unit[lo:].T, cross_pair_index(texts))


def cross_text_cosines(unit: np.ndarray | torch.Tensor, text_index: np.ndarray | torch.Tensor) -> np.ndarray:
    """All cosines u_i . u_j (clipped to [-1, 1]) over unordered pairs i < j of rows of ``unit`` [N, D]
    (unit vectors) with ``text_index`` [N] differing, float64 1-D, row-major order of (i, j)."""
    parts = list(_unit_strips(unit, text_index))
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def _bin_counts(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts in ``bins`` equal bins on [-1, 1] (1 in the last), the edges of streaming's histograms."""
    index = ((values + 1.0) * (bins / 2)).floor_().to(torch.int64).clamp_(0, bins - 1)
    return torch.bincount(index, minlength=bins).double()


def cross_text_cosine_histogram(unit: np.ndarray | torch.Tensor, text_index: np.ndarray | torch.Tensor,
                                bins: int = HIST_BINS) -> np.ndarray:
    """Counts [bins] on [-1, 1] of the cross-text cosines of :func:`cross_text_cosines`, each unordered
    pair once, formed strip by strip (no N x N array)."""
    counts = torch.zeros(bins, dtype=torch.float64)
    for values in _unit_strips(unit, text_index):
        counts += _bin_counts(values, bins)
    return counts.numpy()


def sample_measures(x: np.ndarray | torch.Tensor, text_index: np.ndarray | torch.Tensor, nested: tuple[int, ...] = (1, 2, 4),
                    discard_fraction: float = TWONN_DISCARD,
                    pairs: list[torch.Tensor] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """All measures of a token sample ``x`` [N, D] from texts ``text_index`` [N], from one Gram matrix.

    Returns columns ``isoscore``, ``mev_centred``, ``twonn_id_<s>`` for s in ``nested`` (TwoNN of the
    first N // s rows: put the rows in the order whose prefixes are wanted), ``cross_mean_cos``
    (mean over cross-text pairs, exact), ``cross_pairs``, and the cross-text cosine counts
    [FINE_BINS] on [-1, 1]. The same values as :func:`isoscore`, :func:`mev_centred`,
    :func:`twonn_id` and :func:`cross_text_cosine_histogram` up to float64 round-off (and the rare
    cosine within 1e-15 of a bin edge). The Gram matrix is of the centred rows, G_c = X_c X_c^T, so
    distances do not lose digits to a large common mean; cosines add the mean back:
    x_i . x_j = G_c,ij + a_i + a_j + |m|^2 with a = X_c m. Peak memory: one N x N float64 array.
    ``pairs``: :func:`cross_pair_index` of ``text_index``, if the caller has it (layers of one sample).
    Single-threaded it is about twice as fast as on two torch threads (its operations are small).
    """
    _check_fraction(discard_fraction)
    x = as_float64(x)
    texts = torch.as_tensor(text_index, dtype=torch.int64)
    n, dim = x.shape
    if texts.shape != (n,):
        raise ValueError(f"text_index must have one entry per row ({n}), got shape {tuple(texts.shape)}")
    cols = {"isoscore": math.nan, "mev_centred": math.nan, "cross_mean_cos": math.nan, "cross_pairs": 0.0}
    cols.update({f"twonn_id_{s}": math.nan for s in nested})
    if n < 2:
        return cols, np.zeros(FINE_BINS)
    mean = x.mean(dim=0)
    xc = x - mean
    gram = xc @ xc.T
    trace = float(gram.diagonal().sum())
    cols["isoscore"] = _isoscore_of(gram, dim)
    cols["mev_centred"] = largest_eigenvalue(gram, EIGEN_RTOL) / trace if trace > 0 else math.nan
    sizes = [n // s for s in nested if n // s >= 3]
    distances = _two_nearest(gram, _duplicate_groups(x), sorted(set(sizes), reverse=True)) if sizes else {}
    for s in nested:
        if n // s in distances:
            cols[f"twonn_id_{s}"] = _twonn_fit(distances[n // s], discard_fraction)
    along = xc @ mean
    offset = float(mean @ mean)
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(NORM_FLOOR)

    def strip(lo: int, hi: int) -> torch.Tensor:
        dots = gram[lo:hi, lo:] + along[lo:hi, None]
        dots += along[lo:] + offset
        return dots.div_(norms[lo:hi, None]).div_(norms[lo:])

    fine = torch.zeros(FINE_BINS, dtype=torch.float64)
    total = 0.0
    for values in _cross_blocks(strip, cross_pair_index(texts) if pairs is None else pairs):
        fine += _bin_counts(values, FINE_BINS)
        total += float(values.sum())
    counted = float(fine.sum())
    cols["cross_pairs"] = counted
    cols["cross_mean_cos"] = total / counted if counted else math.nan
    return cols, fine.numpy()


def _gaussian(k: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(k, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@functools.lru_cache(maxsize=32)
def gauss_isoscore(k: int, dim: int, seed: int = 0) -> float:
    """:func:`isoscore` of ``k`` seeded isotropic Gaussian vectors in ``dim`` dimensions (cached):
    the value a perfectly isotropic corpus would show at this sample size, about
    ((k - 1) dim / (k + dim) - 1) / (dim - 1), so 0.2 at dim 4096, k 1000."""
    return isoscore(_gaussian(k, dim, seed))


@functools.lru_cache(maxsize=32)
def gauss_mev_centred(k: int, dim: int, seed: int = 0) -> float:
    """:func:`mev_centred` of ``k`` seeded isotropic Gaussian vectors in ``dim`` dimensions (cached):
    not 1/dim but about (1 + sqrt(dim / (k - 1)))^2 / dim (the Marchenko-Pastur edge over the trace)
    when k and dim are both large: 0.0052 for k 1024, dim 576, not 1/576 = 0.0017."""
    return mev_centred(_gaussian(k, dim, seed))


@functools.lru_cache(maxsize=32)
def gauss_twonn_id(k: int, dim: int, seed: int = 0) -> float:
    """:func:`twonn_id` of ``k`` seeded isotropic Gaussian vectors in ``dim`` dimensions (cached):
    far below ``dim`` once dim is large against log k (about 139 for k 4096, dim 576), the baseline
    a measured ID is read against."""
    return twonn_id(_gaussian(k, dim, seed))
