"""Pairwise cosine, pair angle and cone half-angle against closed forms and brute force."""

import math

import numpy as np
import pytest
import torch

from condense.metrics import (
    PooledCosineAccumulator,
    cone_half_angles_deg,
    mean_pairwise_angle_deg,
    mean_pairwise_cosine,
    pairwise_cosine,
    quantiles_from_counts,
)
from condense.metrics.streaming import HIST_BINS


def cone(n: int, dim: int, half_angle_deg: float, seed: int = 0, scale_norms: bool = True) -> np.ndarray:
    """n vectors at exactly ``half_angle_deg`` from the axis e_0, spread symmetrically around it."""
    rng = np.random.default_rng(seed)
    a = math.radians(half_angle_deg)
    half = rng.standard_normal((n // 2, dim - 1))
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    perp = np.concatenate([half, -half])  # antipodal pairs keep the mean direction on the axis
    x = np.concatenate([np.full((n, 1), math.cos(a)), math.sin(a) * perp], axis=1)
    return x * (rng.uniform(0.5, 20, (n, 1)) if scale_norms else 1)


def test_identical_vectors_have_cosine_one():
    x = np.tile(np.array([[3.0, -1.0, 2.0]]), (5, 1))
    assert mean_pairwise_cosine(x) == pytest.approx(1.0)
    assert mean_pairwise_angle_deg(x) == pytest.approx(0.0, abs=1e-5)
    assert cone_half_angles_deg(x).max() == pytest.approx(0.0, abs=1e-5)


def test_orthonormal_set_has_cosine_zero_and_right_angles():
    x = np.eye(6)[:4] * np.array([[1.0], [2.0], [5.0], [0.1]])
    assert mean_pairwise_cosine(x) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_angle_deg(x) == pytest.approx(90.0)
    # the mean direction of 4 orthonormal vectors is at arccos(1/2) = 60 degrees from each
    np.testing.assert_allclose(cone_half_angles_deg(x), 60.0, atol=1e-9)


def test_diagonal_inclusion_matches_formula():
    x = np.random.default_rng(1).standard_normal((7, 5))
    off = mean_pairwise_cosine(x)
    full = mean_pairwise_cosine(x, include_diagonal=True)
    assert full == pytest.approx((off * 42 + 7) / 49)


@pytest.mark.parametrize("dim", [16, 256])
def test_gaussian_vectors_mean_zero_std_inverse_sqrt_d(dim):
    x = np.random.default_rng(dim).standard_normal((400, dim))
    c = pairwise_cosine(x).numpy()[np.triu_indices(400, 1)]
    assert abs(c.mean()) < 4 / math.sqrt(dim) / math.sqrt(len(c)) * 20
    assert c.std() == pytest.approx(1 / math.sqrt(dim), rel=0.03)


@pytest.mark.parametrize("angle", [10.0, 35.0, 70.0])
def test_cone_of_known_angle(angle):
    x = cone(50, 64, angle)
    np.testing.assert_allclose(cone_half_angles_deg(x), angle, atol=1e-6)
    # pairs in a symmetric cone: cos = cos^2 a + sin^2 a * cos(phi), phi the perpendicular angle
    c_perp = pairwise_cosine(x[:, 1:]).numpy()
    expected = math.cos(math.radians(angle)) ** 2 + math.sin(math.radians(angle)) ** 2 * c_perp
    np.testing.assert_allclose(pairwise_cosine(x).numpy(), expected, atol=1e-9)


def _brute_pairs(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = []
    for seq, m in zip(x, mask):
        c = pairwise_cosine(seq[m]).numpy()
        out.append(c[np.triu_indices(len(c), 1)])
    return np.concatenate(out)


def test_pooled_accumulator_matches_brute_force_with_padding():
    rng = np.random.default_rng(3)
    acc = PooledCosineAccumulator()
    xs, masks = [], []
    for _ in range(3):
        x = rng.standard_normal((4, 20, 8)) + 1.0
        mask = np.arange(20)[None, :] < rng.integers(2, 21, size=(4, 1))
        x[~mask] = 1e6  # padding garbage must not leak into any statistic
        t = torch.tensor(x, dtype=torch.float32)
        m = torch.tensor(mask)
        unit = t / t.norm(dim=-1, keepdim=True) * m.unsqueeze(-1)
        acc.update(unit, m)
        xs.append(x)
        masks.append(mask)
    pairs = _brute_pairs(np.concatenate(xs), np.concatenate(masks))
    stats = acc.finalize()
    cols = stats.columns
    assert cols["n_pairs"] == len(pairs)
    assert cols["mean_cos"] == pytest.approx(pairs.mean(), abs=1e-6)
    assert cols["std_cos"] == pytest.approx(pairs.std(), abs=1e-6)
    assert cols["mean_pair_angle_deg"] == pytest.approx(np.degrees(np.arccos(pairs)).mean(), abs=1e-4)
    width = 2 / 4096  # documented bound: one fine bin
    for q in (5, 25, 50, 75, 95):
        est = cols[f"q{q:02d}_cos"]
        assert (pairs <= est + width).mean() >= q / 100 >= (pairs < est - width).mean()
    hist, _ = np.histogram(pairs, bins=HIST_BINS, range=(-1, 1), density=True)
    np.testing.assert_allclose(stats.density, hist, atol=1e-9)
    assert stats.seq_pair_sums.sum() == pytest.approx(pairs.sum(), abs=1e-3)
    assert stats.seq_pair_counts.sum() == len(pairs)


def test_quantiles_from_counts_uniform():
    counts = np.ones(100)
    assert quantiles_from_counts(counts, 0.0, 1.0, (0.1, 0.5, 0.9)) == pytest.approx([0.1, 0.5, 0.9])
    assert all(math.isnan(q) for q in quantiles_from_counts(np.zeros(10), 0, 1))
