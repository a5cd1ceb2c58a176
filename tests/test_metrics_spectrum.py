"""MEV, singular-value entropy, effective rank, HF/LF ratio, norms: closed forms, and the
streaming accumulator against the pure per-sequence functions."""

import math

import numpy as np
import pytest
import torch

from condense.metrics import (
    TokenGeometryAccumulator,
    cone_half_angles_deg,
    dimension_rms_scaled,
    effective_rank,
    high_low_frequency_ratio,
    massive_token_mask,
    max_explainable_variance,
    mean_pairwise_cosine,
    singular_value_entropy,
    token_norm_stats,
)


def test_rank_one_matrix():
    x = np.outer(np.arange(1, 6), np.array([1.0, -2.0, 0.5]))
    assert max_explainable_variance(x) == pytest.approx(1.0)
    assert singular_value_entropy(x) == pytest.approx(0.0, abs=1e-6)
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-5)


def test_orthonormal_rows_equal_singular_values():
    x = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 4)))[0].T  # 4 orthonormal rows
    assert max_explainable_variance(x) == pytest.approx(0.25)
    assert singular_value_entropy(x) == pytest.approx(math.log(4))
    assert effective_rank(x) == pytest.approx(4.0)


def test_high_low_frequency_ratio():
    same = np.tile([[1.0, 2.0, 3.0]], (6, 1))
    assert high_low_frequency_ratio(same) == pytest.approx(0.0, abs=1e-12)
    # two tokens mu +- v with v orthogonal to mu: ||X - mean||_2 = sqrt(2)|v|, ||1 mu^T||_2 = sqrt(2)|mu|
    mu, v = np.array([3.0, 0.0]), np.array([0.0, 1.5])
    assert high_low_frequency_ratio(np.stack([mu + v, mu - v])) == pytest.approx(0.5)
    assert high_low_frequency_ratio(np.stack([v, -v])) == math.inf


def test_token_norms_and_massive_tokens():
    x = np.ones((9, 4))
    x[3] *= 500.0
    stats = token_norm_stats(x)
    assert stats["max"] == pytest.approx(1000.0)
    assert stats["max_over_median"] == pytest.approx(500.0)
    assert massive_token_mask(x).tolist() == [i == 3 for i in range(9)]


def test_rms_scaling_tames_an_outlier_dimension():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32))
    x[:, 5] += 1000.0  # one outlier dimension makes every pair look identical
    assert mean_pairwise_cosine(x) > 0.99
    assert abs(mean_pairwise_cosine(dimension_rms_scaled(x))) < 0.1
    np.testing.assert_allclose(np.sqrt((dimension_rms_scaled(x).numpy() ** 2).mean(axis=0)), 1.0)


def test_accumulator_matches_pure_functions_per_sequence():
    rng = np.random.default_rng(7)
    lengths = [12, 7, 12, 3]
    x = rng.standard_normal((4, 12, 6)) + np.array([2.0, 0, 0, 0, 0, 0])
    x[1, 2] *= 300.0  # planted massive token at position 2 of sequence 1
    mask = np.arange(12)[None] < np.array(lengths)[:, None]
    x[~mask] = np.nan  # padding is garbage; zeroed by the caller's mask multiply
    t = torch.tensor(np.nan_to_num(x), dtype=torch.float64)
    acc = TokenGeometryAccumulator(dim=6, spectrum_seqs=3)
    acc.update(t, torch.tensor(mask), torch.arange(12).expand(4, -1))
    cols = acc.finalize()
    seqs = [x[b][mask[b]] for b in range(4)]
    angles = np.concatenate([cone_half_angles_deg(s) for s in seqs])
    assert cols["cone_half_angle_mean_deg"] == pytest.approx(angles.mean())
    assert cols["cone_half_angle_max_deg"] == pytest.approx(angles.max())
    assert abs(cols["cone_half_angle_p95_deg"] - np.quantile(angles, 0.95)) < 3.0  # 40 tokens: coarse
    assert cols["n_tokens"] == sum(lengths) and cols["n_seqs"] == 4
    assert cols["mev"] == pytest.approx(np.mean([max_explainable_variance(s) for s in seqs[:3]]))
    assert cols["sv_entropy"] == pytest.approx(np.mean([singular_value_entropy(s) for s in seqs[:3]]))
    assert cols["effective_rank"] == pytest.approx(np.mean([effective_rank(s) for s in seqs[:3]]))
    assert cols["hf_lf_ratio"] == pytest.approx(np.mean([high_low_frequency_ratio(s) for s in seqs[:3]]))
    assert cols["mean_cos_dim_scaled"] == pytest.approx(
        np.mean([mean_pairwise_cosine(dimension_rms_scaled(s)) for s in seqs]))
    assert cols["norm_max_over_median"] == pytest.approx(
        np.mean([token_norm_stats(s)["max_over_median"] for s in seqs]))
    assert cols["n_massive_tokens"] == 1 and cols["massive_positions"] == "2:1"
