"""The exact cross-text accumulator against closed forms and a brute-force float64 loop over all pairs."""

import math
import pickle

import numpy as np
import pytest
import torch

from condense.metrics.cross_text import ROGUE_TOP, CrossTextAccumulator
from condense.metrics.streaming import PooledCosineAccumulator


def padded(texts: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows of each text [n_s, D] in one right-padded batch [B, T, D] (zeros in padding) and its mask."""
    width, dim = max(len(x) for x in texts), texts[0].shape[1]
    unit = torch.zeros(len(texts), width, dim, dtype=torch.float64)
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    for b, x in enumerate(texts):
        unit[b, : len(x)] = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
        mask[b, : len(x)] = True
    return unit, mask


def columns(texts: list[np.ndarray], within: float = math.nan, batch: int | None = None) -> dict[str, float]:
    acc = CrossTextAccumulator()
    step = batch or len(texts)
    for lo in range(0, len(texts), step):
        acc.update(*padded(texts[lo: lo + step]))
    return acc.finalize(within)


def brute_force(texts: list[np.ndarray]) -> dict:
    """Every column by its definition: loops over all token pairs from different texts (float64)."""
    us = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in texts]
    total, pairs, per_dim = 0.0, 0, np.zeros(texts[0].shape[1])
    for s, a in enumerate(us):
        for t, b in enumerate(us):
            if s != t:
                for u in a:  # ordered pairs (u from s, v from t)
                    products = u[None, :] * b
                    per_dim += products.sum(axis=0)
                    total += products.sum()
                    pairs += len(b)
    means = [u.mean(axis=0) for u in us]
    text_weighted = np.mean([means[s] @ means[t] for s in range(len(us)) for t in range(len(us)) if s != t])
    everything = np.concatenate(us)
    return {"cross_mean_cos": total / pairs, "contribution": per_dim / pairs, "cross_n_pairs": pairs / 2,
            "cross_mean_cos_text_weighted": text_weighted,
            "corpus_resultant_length": np.linalg.norm(everything.sum(axis=0)) / len(everything)}


def clustered_corpus(seed: int, n_texts: int = 7, dim: int = 12) -> list[np.ndarray]:
    """Texts of uneven lengths around a shared direction plus their own axis: cross > 0, within > cross."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    out = []
    for _ in range(n_texts):
        own = rng.normal(size=dim) * 2
        out.append(shared + own + rng.normal(size=(int(rng.integers(1, 9)), dim)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_column_matches_the_brute_force_loop(seed):
    texts = clustered_corpus(seed)
    ref = brute_force(texts)
    cols = columns(texts, within=0.7)
    for key in ("cross_mean_cos", "cross_mean_cos_text_weighted", "corpus_resultant_length", "cross_n_pairs"):
        assert cols[key] == pytest.approx(ref[key], abs=1e-12), key
    assert cols["within_minus_cross"] == pytest.approx(0.7 - ref["cross_mean_cos"], abs=1e-12)
    order = sorted(range(len(ref["contribution"])), key=lambda d: (-ref["contribution"][d], d))[:ROGUE_TOP]
    for k, d in enumerate(order, start=1):
        assert cols[f"rogue_dim_{k}"] == d
        assert cols[f"rogue_share_{k}"] == pytest.approx(ref["contribution"][d] / ref["cross_mean_cos"], abs=1e-10)


def test_contributions_sum_to_the_cross_mean():
    texts = clustered_corpus(3, dim=40)
    acc = CrossTextAccumulator()
    acc.update(*padded(texts))
    np.testing.assert_allclose(acc.contributions(), brute_force(texts)["contribution"], atol=1e-12)
    assert acc.contributions().sum() == pytest.approx(acc.finalize()["cross_mean_cos"], abs=1e-12)


def test_batches_orders_merge_and_pickle_give_the_same_columns():
    texts = clustered_corpus(4, n_texts=11)
    whole = columns(texts)
    for batch in (1, 2, 5):
        for key, value in columns(texts, batch=batch).items():
            assert value == pytest.approx(whole[key], abs=1e-12, nan_ok=True), (batch, key)
    backwards = columns(texts[::-1], batch=3)
    assert backwards == pytest.approx(whole, abs=1e-12, nan_ok=True)
    first, second = CrossTextAccumulator(), CrossTextAccumulator()
    first.update(*padded(texts[:4]))
    second.update(*padded(texts[4:]))
    restored = pickle.loads(pickle.dumps(first))  # what a checkpoint does
    assert restored.merge(second).finalize() == pytest.approx(whole, abs=1e-12, nan_ok=True)


def test_identical_vectors_give_one():
    v = np.arange(1.0, 9.0)
    cols = columns([np.tile(v, (n, 1)) for n in (3, 1, 5)], within=1.0)
    assert cols["cross_mean_cos"] == pytest.approx(1.0, abs=1e-14)
    assert cols["cross_mean_cos_text_weighted"] == pytest.approx(1.0, abs=1e-14)
    assert cols["corpus_resultant_length"] == pytest.approx(1.0, abs=1e-14)
    assert cols["within_minus_cross"] == pytest.approx(0.0, abs=1e-14)
    assert cols["cross_n_pairs"] == (81 - 35) / 2
    # every dimension contributes v_d^2 / |v|^2: the largest coordinates lead
    assert [cols[f"rogue_dim_{k}"] for k in range(1, 6)] == [7, 6, 5, 4, 3]
    assert cols["rogue_share_1"] == pytest.approx(64 / (v @ v), abs=1e-14)


def test_texts_from_orthogonal_subspaces_give_zero_cross_but_keep_their_cone():
    rng = np.random.default_rng(0)
    dim, texts = 24, []
    for s in range(4):  # text s lives in coordinates 6s .. 6s+5, with a cone around its own axis
        x = np.zeros((10, dim))
        x[:, 6 * s: 6 * s + 6] = rng.normal(size=(10, 6)) * 0.2 + 1.0
        texts.append(x)
    cols = columns(texts)
    # exact in the pairs; ‖R‖² − A cancels to float64 rounding
    assert cols["cross_mean_cos"] == pytest.approx(0.0, abs=1e-14)
    assert cols["cross_mean_cos_text_weighted"] == pytest.approx(0.0, abs=1e-14)
    within = PooledCosineAccumulator()
    within.update(*padded(texts))
    assert within.finalize().columns["mean_cos"] > 0.8


@pytest.mark.parametrize("theta_deg", [20.0, 60.0, 85.0])
def test_cone_of_known_angle(theta_deg):
    """Tokens cos(t) e + sin(t) v_i with orthonormal v_i orthogonal to e: every pair has cosine cos(t)^2."""
    theta, n_tokens = math.radians(theta_deg), 30
    basis = np.linalg.qr(np.random.default_rng(1).normal(size=(64, 64)))[0]
    e, rest = basis[:, 0], basis[:, 1: n_tokens + 1].T
    tokens = math.cos(theta) * e + math.sin(theta) * rest
    texts = [tokens[:12], tokens[12:20], tokens[20:]]
    cols = columns(texts)
    assert cols["cross_mean_cos"] == pytest.approx(math.cos(theta) ** 2, abs=1e-13)
    assert cols["cross_mean_cos_text_weighted"] == pytest.approx(math.cos(theta) ** 2, abs=1e-13)
    # the mean unit vector is cos(t) e + sin(t) (sum of v_i) / N, of length sqrt(cos^2 + sin^2 / N)
    assert cols["corpus_resultant_length"] == pytest.approx(
        math.sqrt(math.cos(theta) ** 2 + math.sin(theta) ** 2 / n_tokens), abs=1e-13)


def test_isotropic_gaussians_stay_within_the_known_spread():
    """Over repeated corpora the cross mean has mean 0 and the sd of the gauss_ columns (to sampling error)."""
    rng = np.random.default_rng(7)
    dim, sizes = 16, (3, 7, 2, 5, 4)
    runs = [columns([rng.normal(size=(n, dim)) for n in sizes]) for _ in range(1500)]
    cross = np.array([c["cross_mean_cos"] for c in runs])
    weighted = np.array([c["cross_mean_cos_text_weighted"] for c in runs])
    sd, sd_weighted = runs[0]["gauss_cross_mean_cos_sd"], runs[0]["gauss_cross_mean_cos_text_weighted_sd"]
    n, q = sum(sizes), sum(s * s for s in sizes)
    assert sd == pytest.approx(math.sqrt(2 / (dim * (n * n - q))))
    assert abs(cross.mean()) < 4 * sd / math.sqrt(len(runs))
    assert cross.std() == pytest.approx(sd, rel=0.08)  # sd of a sample sd of 1500 draws: ~2 %
    assert abs(weighted.mean()) < 4 * sd_weighted / math.sqrt(len(runs))
    assert weighted.std() == pytest.approx(sd_weighted, rel=0.08)
    resultant = np.array([c["corpus_resultant_length"] for c in runs])
    assert np.sqrt((resultant ** 2).mean()) == pytest.approx(runs[0]["gauss_corpus_resultant_length"], rel=0.05)


def test_pooled_mean_cos_is_the_within_identity_of_the_same_sums():
    """mean_cos = (A - N) / (Q - N) from the cross-text state equals the pooled accumulator's."""
    texts = clustered_corpus(5, n_texts=6, dim=20)
    unit, mask = padded(texts)
    acc = CrossTextAccumulator()
    acc.update(unit, mask)
    a, n, q = (float(acc.state[k]) for k in ("A", "N", "Q"))
    pooled = PooledCosineAccumulator()
    pooled.update(unit, mask)
    assert (a - n) / (q - n) == pytest.approx(pooled.finalize().columns["mean_cos"], abs=1e-12)


def test_too_few_texts_give_nan_not_an_error():
    one = columns([np.ones((4, 3))], within=1.0)
    assert math.isnan(one["cross_mean_cos"]) and math.isnan(one["cross_mean_cos_text_weighted"])
    assert math.isnan(one["rogue_dim_1"]) and one["corpus_resultant_length"] == pytest.approx(1.0)
    empty = CrossTextAccumulator().finalize()
    assert math.isnan(empty["cross_mean_cos"]) and math.isnan(empty["corpus_resultant_length"])


def test_negative_cross_mean_lists_dimensions_without_shares():
    cols = columns([np.array([[1.0, 0.0]]), np.array([[-1.0, 0.1]])])
    assert cols["cross_mean_cos"] < 0
    assert cols["rogue_dim_1"] == 1 and math.isnan(cols["rogue_share_1"])
