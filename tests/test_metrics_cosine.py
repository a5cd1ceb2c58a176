"""Pairwise cosine, pair angle and cone half-angle against closed forms and brute force."""

import math

import numpy as np
import pytest
import torch

from condense.metrics import (
    PaperCosineAccumulator,
    PooledCosineAccumulator,
    cone_half_angles_deg,
    mean_pairwise_angle_deg,
    mean_pairwise_cosine,
    pairwise_cosine,
    quantiles_from_counts,
)
from condense.metrics.streaming import HIST_BINS, TokenGeometryAccumulator


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


def test_per_sequence_values_survive_many_batches_in_order():
    """The per-sequence lists are joined into one tensor every few dozen batches (to keep the heap
    flat): across many joins every sequence's value is kept, once, in order."""
    rng = np.random.default_rng(4)
    pooled, geometry = PooledCosineAccumulator(), TokenGeometryAccumulator(6, spectrum_seqs=0)
    sums, ratios = [], []
    for _ in range(101):  # single-sequence batches: more than three joins
        x = rng.standard_normal((1, 9, 6)) + 0.5
        norms = np.linalg.norm(x[0], axis=1)
        unit = x[0] / norms[:, None]
        sums.append((unit @ unit.T)[np.triu_indices(9, 1)].sum())
        ratios.append(norms.max() / np.median(norms))  # 9 tokens: the median is one of them
        t, mask = torch.tensor(x), torch.ones(1, 9, dtype=torch.bool)
        pooled.update(t / t.norm(dim=-1, keepdim=True), mask)
        geometry.update(t, mask, torch.arange(9).unsqueeze(0))
    np.testing.assert_allclose(pooled.finalize().seq_pair_sums, sums, rtol=1e-9)
    assert geometry.finalize()["norm_max_over_median"] == pytest.approx(np.mean(ratios), rel=1e-9)


def test_quantiles_from_counts_uniform():
    counts = np.ones(100)
    assert quantiles_from_counts(counts, 0.0, 1.0, (0.1, 0.5, 0.9)) == pytest.approx([0.1, 0.5, 0.9])
    assert all(math.isnan(q) for q in quantiles_from_counts(np.zeros(10), 0, 1))


def paper_reference(seqs: list[np.ndarray], floor: float = 1e-3) -> np.ndarray:
    """The paper's averaged matrix in numpy: per text C = clip(x_i.x_j / (max(|x_i|, f) max(|x_j|, f))),
    diagonal kept, each entry averaged over the texts long enough to have it."""
    size = max(len(x) for x in seqs)
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for x in seqs:
        u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), floor)
        total[: len(x), : len(x)] += np.clip(u @ u.T, -1, 1)
        count[: len(x), : len(x)] += 1
    return total / count


def paper_update(acc: PaperCosineAccumulator, seqs: list[np.ndarray], width: int) -> None:
    x = np.zeros((len(seqs), width, seqs[0].shape[1]))
    mask = np.zeros((len(seqs), width), bool)
    for b, s in enumerate(seqs):
        x[b, : len(s)], mask[b, : len(s)] = s, True
    acc.update(torch.tensor(x), torch.tensor(mask))


def test_paper_accumulator_floors_norms_at_1e3_and_keeps_the_diagonal():
    rng = np.random.default_rng(4)
    seqs = [rng.standard_normal((6, 5)) + 0.5 for _ in range(4)]
    seqs[1][2] = 1e-5 * rng.standard_normal(5)  # a near-zero token: the floor decides its cosines
    acc = PaperCosineAccumulator(6)
    paper_update(acc, seqs[:3], 6)
    paper_update(acc, seqs[3:], 6)
    ref = paper_reference(seqs)
    np.testing.assert_allclose(acc.averaged_matrix().numpy(), ref, atol=1e-12)
    cols = acc.finalize().columns
    assert cols["n_pairs"] == 36
    assert cols["mean_cos"] == pytest.approx(ref.mean()) and cols["std_cos"] == pytest.approx(ref.std())
    assert cols["mean_pair_angle_deg"] == pytest.approx(np.degrees(np.arccos(np.clip(ref, -1, 1))).mean())
    assert abs(ref.mean() - paper_reference(seqs, floor=1e-8).mean()) > 1e-3  # the floor is what is tested


def test_paper_accumulator_ragged_averages_each_entry_over_the_texts_that_have_it():
    rng = np.random.default_rng(8)
    seqs = [rng.standard_normal((n, 4)) + 1.0 for n in (7, 3, 5, 7, 2)]
    acc = PaperCosineAccumulator(7, ragged=True)
    paper_update(acc, seqs[:2], 7)
    paper_update(acc, seqs[2:], 7)
    ref = paper_reference(seqs)
    np.testing.assert_allclose(acc.averaged_matrix().numpy(), ref, atol=1e-12)
    stats = acc.finalize()
    assert stats.columns["mean_cos"] == pytest.approx(ref.mean())
    hist, _ = np.histogram(ref, bins=HIST_BINS, range=(-1, 1), density=True)
    np.testing.assert_allclose(stats.density, hist, atol=1e-9)
    with pytest.raises(ValueError, match="exactly S tokens"):
        paper_update(PaperCosineAccumulator(7), seqs[:2], 7)


def test_paper_accumulator_pads_a_short_batch_to_its_length():
    rng = np.random.default_rng(9)
    seqs = [rng.standard_normal((n, 3)) for n in (6, 4, 4)]
    acc = PaperCosineAccumulator(6, ragged=True)
    paper_update(acc, seqs[:1], 6)
    paper_update(acc, seqs[1:], 4)  # a later batch narrower than S
    np.testing.assert_allclose(acc.averaged_matrix().numpy(), paper_reference(seqs), atol=1e-12)
