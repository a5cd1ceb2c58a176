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


def test_unequal_singular_values_closed_forms():
    # singular values 3 and 1: MEV = 9 / 10, entropy of p = (3/4, 1/4), effective rank its exponential
    x = np.diag([3.0, 1.0])
    assert max_explainable_variance(x) == pytest.approx(0.9)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert singular_value_entropy(x) == pytest.approx(h)
    assert effective_rank(x) == pytest.approx(math.exp(h))


def test_high_low_frequency_ratio_uses_the_spectral_norm():
    # deviations +-e1 and +-2 e2 around mu: singular values sqrt(2) and sqrt(8); spectral norm sqrt(8)
    mu = np.array([0.0, 0.0, 4.0])
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    x = np.stack([mu + e1, mu - e1, mu + 2 * e2, mu - 2 * e2])
    assert high_low_frequency_ratio(x) == pytest.approx(math.sqrt(8) / (2 * 4.0))


def spectrum_reference(seqs):
    return {"mev": np.mean([max_explainable_variance(s) for s in seqs]),
            "sv_entropy": np.mean([singular_value_entropy(s) for s in seqs]),
            "effective_rank": np.mean([effective_rank(s) for s in seqs]),
            "hf_lf_ratio": np.mean([high_low_frequency_ratio(s) for s in seqs])}


@pytest.mark.parametrize("lengths", [[5, 5, 5], [5, 3, 7]], ids=["one-mask", "ragged"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectrum_of_sequences_shorter_than_the_hidden_size(lengths, dtype):
    """n <= D: the spectrum comes from the n x n Gram matrix (and its centred form), not the D x D one."""
    rng = np.random.default_rng(11)
    dim, width = 16, max(lengths)
    x = rng.standard_normal((len(lengths), width, dim)) + np.linspace(0, 3, dim)  # a shared offset: a cone
    x[1, 0] *= 4.0  # unequal norms, so centring matters
    mask = np.arange(width)[None] < np.array(lengths)[:, None]
    x[~mask] = 0.0
    acc = TokenGeometryAccumulator(dim=dim, spectrum_seqs=len(lengths))
    acc.update(torch.tensor(x, dtype=dtype), torch.tensor(mask), torch.arange(width).expand(len(lengths), -1))
    cols = acc.finalize()
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for key, value in spectrum_reference([x[b][mask[b]] for b in range(len(lengths))]).items():
        assert cols[key] == pytest.approx(value, rel=tol, abs=tol), key


def test_spectrum_seqs_caps_across_batches_and_two_token_sequences_count():
    rng = np.random.default_rng(5)
    dim = 4
    batches = [rng.standard_normal((2, 6, dim)) + 1.0 for _ in range(3)]
    masks = [np.ones((2, 6), bool) for _ in range(3)]
    masks[1][0, 2:] = False  # exactly two counted tokens: a sequence like any other
    acc = TokenGeometryAccumulator(dim=dim, spectrum_seqs=3)  # the whole first batch, half the second
    for x, m in zip(batches, masks):
        acc.update(torch.tensor(x), torch.tensor(m), torch.arange(6).expand(2, -1))
    cols = acc.finalize()
    seqs = [x[b][m[b]] for x, m in zip(batches, masks) for b in range(2)]
    assert cols["n_seqs"] == 6 and cols["n_tokens"] == sum(len(s) for s in seqs) == 32
    for key, value in spectrum_reference(seqs[:3]).items():
        assert cols[key] == pytest.approx(value, rel=1e-9), key
    angles = np.concatenate([cone_half_angles_deg(s) for s in seqs])
    assert cols["cone_half_angle_mean_deg"] == pytest.approx(angles.mean())
    assert cols["mean_cos_dim_scaled"] == pytest.approx(
        np.mean([mean_pairwise_cosine(dimension_rms_scaled(s)) for s in seqs]))
    assert cols["norm_max_over_median"] == pytest.approx(
        np.mean([token_norm_stats(s)["max_over_median"] for s in seqs]))
    norms = np.concatenate([np.linalg.norm(s, axis=1) for s in seqs])
    assert cols["norm_mean"] == pytest.approx(norms.mean()) and cols["norm_max"] == pytest.approx(norms.max())


def test_sequences_with_fewer_than_two_tokens_are_left_out():
    x = torch.tensor(np.random.default_rng(2).standard_normal((3, 5, 4)))
    mask = torch.tensor([[True] * 5, [True, False, False, False, False], [False] * 5])
    acc = TokenGeometryAccumulator(dim=4, spectrum_seqs=3)
    acc.update(x, mask, torch.arange(5).expand(3, -1))
    cols = acc.finalize()
    assert cols["n_seqs"] == 1 and cols["n_tokens"] == 5
    assert cols["mev"] == pytest.approx(max_explainable_variance(x[0].numpy()))


def test_massive_positions_align_across_batches_of_different_widths():
    acc = TokenGeometryAccumulator(dim=3, spectrum_seqs=0)
    for width, massive_at in ((12, 7), (5, 2), (9, 7)):
        x = torch.ones(1, width, 3, dtype=torch.float64)
        x[0, massive_at] *= 1000.0
        acc.update(x, torch.ones(1, width, dtype=torch.bool), torch.arange(width).expand(1, -1))
    cols = acc.finalize()
    assert cols["n_massive_tokens"] == 3 and cols["massive_positions"] == "7:2;2:1"


def test_cone_volume_column_is_the_sphere_fraction_of_the_p95_angle():
    """Tokens on a cone of 40 degrees in D = 3: the column is log10((1 - cos a) / 2) of a = p95."""
    a = math.radians(40.0)
    phi = np.linspace(0, 2 * np.pi, 200, endpoint=False)  # evenly round the axis: the mean is on it
    x = np.stack([np.sin(a) * np.cos(phi), np.sin(a) * np.sin(phi), np.full_like(phi, np.cos(a))], axis=1)
    acc = TokenGeometryAccumulator(dim=3, spectrum_seqs=0)
    acc.update(torch.tensor(x[None]), torch.ones(1, 200, dtype=torch.bool), torch.arange(200)[None])
    cols = acc.finalize()
    assert cols["cone_half_angle_p95_deg"] == pytest.approx(40.0, abs=0.05)  # one 0.05-degree bin
    p95 = math.radians(cols["cone_half_angle_p95_deg"])
    assert cols["cone_log10_sphere_fraction"] == pytest.approx(math.log10((1 - math.cos(p95)) / 2), abs=1e-6)
