"""The seeded token sample: its keys, its invariance to batching, resume and sharding, and its columns."""

import math
import pickle

import numpy as np
import pytest
import torch

from condense.metrics.isotropy import (cross_text_cosine_histogram, gauss_isoscore, gauss_mev_centred, gauss_twonn_id,
                                       isoscore, mev_centred, twonn_id)
from condense.metrics.streaming import HIST_BINS
from condense.metrics.token_sample import (SAMPLE_COLUMNS, TokenSampleAccumulator, sample_size_for_budget,
                                           token_keys)

MASK64 = (1 << 64) - 1


def splitmix64_reference(z: int) -> int:
    """SplitMix64 on Python integers modulo 2^64 (Steele, Lea and Flood 2014; Vigna's splitmix64.c)."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_key(seed: int, text: int, position: int) -> int:
    return splitmix64_reference(splitmix64_reference(splitmix64_reference(seed & MASK64) ^ text) ^ position) >> 1


def test_splitmix64_known_value_and_keys_match_integer_reference():
    assert splitmix64_reference(0) == 0xE220A8397B1DCDAF  # the first output of splitmix64 seeded with 0
    texts = torch.tensor([0, 1, 7, 2**40 + 3, 2**62])
    positions = torch.tensor([0, 1, 5, 511, 2**31])
    for seed in (0, 1, -3, 2**63 + 11):
        keys = token_keys(seed, texts[:, None], positions[None, :])
        assert keys.dtype == torch.int64 and keys.shape == (5, 5)
        expected = [[reference_key(seed, int(t), int(p)) for p in positions] for t in texts]
        assert keys.tolist() == expected
    assert bool((keys >= 0).all())


def test_budget_formula():
    budget = 256 * 2**20
    for n_layers, dim in [(31, 576), (33, 4096), (7, 384), (1, 32), (200, 8192)]:
        k = sample_size_for_budget(n_layers, dim)
        assert k <= 4096
        assert k * n_layers * dim * 4 <= budget
        assert k == 4096 or (k + 1) * n_layers * dim * 4 > budget
    assert sample_size_for_budget(31, 576) == 3758 and sample_size_for_budget(33, 4096) == 496
    assert sample_size_for_budget(1, 32) == 4096 and sample_size_for_budget(1, 32, cap=100) == 100
    assert sample_size_for_budget(2, 10, budget_bytes=80) == 1 and sample_size_for_budget(2, 10, budget_bytes=79) == 0
    with pytest.raises(ValueError, match="n_layers"):
        sample_size_for_budget(0, 576)


def corpus(n_texts: int = 40, dim: int = 12, seed: int = 0, n_layers: int = 2):
    """Texts of 1..30 tokens; per layer a list of (hidden [len, D]) and the global text ids."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 31, n_texts)
    text_ids = rng.permutation(10 * n_texts)[:n_texts]  # global ids, not 0..S-1
    layers = [[torch.as_tensor(rng.standard_normal((n, dim)) + layer, dtype=torch.float32) for n in lengths]
              for layer in range(n_layers)]
    return layers, text_ids


def batches(texts: list[torch.Tensor], text_ids, order, batch_size: int, pad_left: bool = False):
    """Padded batches (padding rows NaN: a padded token that entered the sample would raise)."""
    for lo in range(0, len(order), batch_size):
        chosen = order[lo: lo + batch_size]
        width = max(len(texts[i]) for i in chosen) + 2
        hidden = torch.full((len(chosen), width, texts[0].shape[1]), math.nan)
        mask = torch.zeros(len(chosen), width, dtype=torch.bool)
        positions = torch.zeros(len(chosen), width, dtype=torch.int64)
        for row, i in enumerate(chosen):
            n = len(texts[i])
            start = width - n if pad_left else 0
            hidden[row, start: start + n] = texts[i]
            mask[row, start: start + n] = True
            positions[row, start: start + n] = torch.arange(n)
        yield hidden, mask, torch.as_tensor(text_ids[chosen], dtype=torch.int64), positions


def run(texts, text_ids, k, order=None, batch_size=4, seed=0, skip_first=True, pad_left=False):
    acc = TokenSampleAccumulator(k, texts[0].shape[1], seed=seed, skip_first=skip_first)
    for batch in batches(texts, text_ids, np.arange(len(texts)) if order is None else order, batch_size, pad_left):
        acc.update(*batch)
    return acc


def state(acc: TokenSampleAccumulator) -> tuple:
    return acc.keys.tolist(), acc.texts.tolist(), acc.positions.tolist(), acc.vectors.numpy().tobytes()


@pytest.mark.parametrize("skip_first", [True, False])
def test_sample_is_the_k_smallest_keys_of_the_counted_tokens(skip_first):
    (texts, _), text_ids = corpus()
    k = 100
    acc = run(texts, text_ids, k, skip_first=skip_first)
    tokens = [(reference_key(0, int(t), p), int(t), p) for t, x in zip(text_ids, texts) for p in range(len(x))
              if p > 0 or not skip_first]
    expected = sorted(tokens)[:k]
    assert list(zip(acc.keys.tolist(), acc.texts.tolist(), acc.positions.tolist())) == expected
    where = {int(t): x for t, x in zip(text_ids, texts)}
    for row, (_, t, p) in enumerate(expected):
        assert torch.equal(acc.vectors[row], where[t][p])
    assert (0 in acc.positions.tolist()) == (not skip_first)


def test_sample_invariant_to_batch_size_order_padding_resume_and_shards():
    (texts, _), text_ids = corpus(n_texts=60)
    k = 150
    reference = state(run(texts, text_ids, k, batch_size=1))
    rng = np.random.default_rng(4)
    for batch_size in (2, 7, 60):
        order = rng.permutation(len(texts))
        assert state(run(texts, text_ids, k, order=order, batch_size=batch_size, pad_left=True)) == reference
    # resume: pickle half-way, go on from the copy
    acc = TokenSampleAccumulator(k, 12)
    stream = list(batches(texts, text_ids, rng.permutation(len(texts)), 5))
    for batch in stream[:6]:
        acc.update(*batch)
    acc = pickle.loads(pickle.dumps(acc))
    for batch in stream[6:]:
        acc.update(*batch)
    assert state(acc) == reference
    # shards: three disjoint sets of texts, merged
    shards = np.array_split(rng.permutation(len(texts)), 3)
    merged = run(texts, text_ids, k, order=shards[0], batch_size=3)
    for shard in shards[1:]:
        merged.merge(run(texts, text_ids, k, order=shard, batch_size=8))
    assert state(merged) == reference
    cols, density = merged.finalize()
    ref_cols, ref_density = run(texts, text_ids, k, batch_size=1).finalize()
    assert cols == pytest.approx(ref_cols, nan_ok=True) and np.array_equal(density, ref_density)


def test_select_only_reads_the_state_and_a_stale_threshold_keeps_the_same_sample():
    """The probe selects a batch's candidates in a worker thread while the previous batch is being
    added: select must not change the state, and candidates chosen against the older (larger)
    threshold must still give the k smallest keys."""
    (texts, _), text_ids = corpus(n_texts=60)
    k = 120
    reference = state(run(texts, text_ids, k, batch_size=3))
    acc = TokenSampleAccumulator(k, 12)
    stream = list(batches(texts, text_ids, np.arange(len(texts)), 3))
    waiting = acc.select(*stream[0])
    for batch in stream[1:]:
        before = state(acc)
        chosen = acc.select(*batch)  # against the state before the previous batch is added
        assert state(acc) == before
        acc.add(waiting)
        waiting = chosen
    acc.add(waiting)
    assert state(acc) == reference
    # once the sample is full, only tokens below its largest key are gathered
    full = run(texts, text_ids, k, batch_size=3)
    late = full.select(*stream[-1])
    assert len(late.keys) and bool((late.keys <= full.keys[-1]).all())
    everything = TokenSampleAccumulator(k, 12).select(*stream[-1])
    assert len(late.keys) < len(everything.keys)


def test_same_tokens_at_every_layer_and_vectors_of_each_layer():
    (layer0, layer1), text_ids = corpus()
    samples = [run(layer, text_ids, 80, batch_size=6) for layer in (layer0, layer1)]
    assert samples[0].keys.tolist() == samples[1].keys.tolist()
    assert samples[0].texts.tolist() == samples[1].texts.tolist()
    assert samples[0].positions.tolist() == samples[1].positions.tolist()
    assert not torch.equal(samples[0].vectors, samples[1].vectors)
    # the keys a caller computes once for all layers select the same tokens
    acc = TokenSampleAccumulator(80, 12)
    for hidden, mask, ids, positions in batches(layer1, text_ids, np.arange(len(layer1)), 6):
        acc.update(hidden, mask, ids, positions, keys=token_keys(0, ids[:, None], positions))
    assert state(acc) == state(samples[1])


def test_other_seed_other_sample_and_uniform_over_tokens():
    (texts,), text_ids = corpus(n_texts=200, dim=4, n_layers=1)
    a, b = run(texts, text_ids, 300, seed=1), run(texts, text_ids, 300, seed=2)
    assert set(zip(a.texts.tolist(), a.positions.tolist())) != set(zip(b.texts.tolist(), b.positions.tolist()))
    # uniform without replacement: each counted token has probability k / M; texts by their length
    lengths = {int(t): len(x) - 1 for t, x in zip(text_ids, texts)}
    m = sum(lengths.values())
    frac_long = sum(1 for t in a.texts.tolist() if lengths[t] >= 15) / 300
    expected = sum(n for n in lengths.values() if n >= 15) / m
    assert frac_long == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 300))


def test_low_precision_hidden_states_are_stored_as_float32():
    (texts,), text_ids = corpus(n_layers=1)
    halves = [x.to(torch.bfloat16) for x in texts]
    acc = run(halves, text_ids, 50)
    assert acc.vectors.dtype == torch.float32
    assert torch.equal(acc.vectors, run([x.float() for x in halves], text_ids, 50).vectors)


def test_bad_inputs_raise():
    (texts,), text_ids = corpus(n_layers=1)
    hidden, mask, ids, positions = next(batches(texts, text_ids, np.arange(4), 4))
    acc = TokenSampleAccumulator(1000, 12)
    bad = hidden.clone()
    bad[1, 1, 3] = math.inf
    with pytest.raises(ValueError, match=f"text {int(ids[1])}, position 1 is NaN or inf"):
        acc.update(bad, mask, ids, positions)
    assert len(acc.keys) == 0  # nothing half-kept
    with pytest.raises(ValueError, match=r"hidden must be \[B, T, 12\]"):
        acc.update(hidden[..., :5], mask, ids, positions)
    with pytest.raises(ValueError, match="text_index must be"):
        acc.update(hidden, mask, ids[:2], positions)
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(TokenSampleAccumulator(1000, 12, seed=3))


def test_finalize_columns_equal_the_measures_of_the_kept_vectors():
    (texts,), text_ids = corpus(n_texts=60, dim=24, n_layers=1)
    acc = run(texts, text_ids, 400)
    cols, density = acc.finalize()
    assert list(cols) == list(SAMPLE_COLUMNS)
    x = acc.vectors.double()
    n = len(x)
    assert cols["sample_tokens"] == n == 400 and cols["sample_texts"] == len(set(acc.texts.tolist()))
    assert cols["isoscore"] == pytest.approx(isoscore(x), rel=1e-10)
    assert cols["mev_centred"] == pytest.approx(mev_centred(x), rel=1e-10)
    assert cols["twonn_id"] == pytest.approx(twonn_id(x), rel=1e-10)
    assert cols["twonn_id_half"] == pytest.approx(twonn_id(x[: n // 2]), rel=1e-10)
    assert cols["twonn_id_quarter"] == pytest.approx(twonn_id(x[: n // 4]), rel=1e-10)
    assert cols["gauss_isoscore"] == gauss_isoscore(n, 24) and cols["gauss_twonn_id"] == gauss_twonn_id(n, 24)
    assert cols["gauss_mev_centred"] == gauss_mev_centred(n, 24)
    u = (x / x.norm(dim=1, keepdim=True)).numpy()
    t = acc.texts.numpy()
    cross = np.array([u[i] @ u[j] for i in range(n) for j in range(i + 1, n) if t[i] != t[j]])
    assert cols["sample_cross_mean_cos"] == pytest.approx(cross.mean(), rel=1e-10)
    assert cols["sample_cross_cos_q50"] == pytest.approx(np.quantile(cross, 0.5), abs=2e-3)
    assert cols["sample_cross_cos_q05"] < cols["sample_cross_cos_q25"] < cols["sample_cross_cos_q75"] < cols["sample_cross_cos_q95"]
    counts = cross_text_cosine_histogram(u, t, bins=HIST_BINS)
    np.testing.assert_allclose(density, counts / (counts.sum() * 2 / HIST_BINS), rtol=1e-12)
    assert density.sum() * 2 / HIST_BINS == pytest.approx(1.0)


def test_small_samples_give_nan_columns_not_errors():
    one_text = [torch.randn(5, 6)]
    cols, density = run(one_text, np.array([3]), 10).finalize()
    assert cols["sample_tokens"] == 4 and cols["sample_texts"] == 1
    assert math.isfinite(cols["isoscore"]) and math.isfinite(cols["twonn_id"])
    assert math.isnan(cols["sample_cross_mean_cos"]) and math.isnan(cols["sample_cross_cos_q50"])
    assert math.isnan(cols["twonn_id_quarter"]) and not density.any()
    empty, density = TokenSampleAccumulator(10, 6).finalize()
    assert empty["sample_tokens"] == 0
    assert all(math.isnan(v) for key, v in empty.items() if key not in ("sample_tokens", "sample_texts"))
    off = run(one_text, np.array([3]), 0)
    assert len(off.keys) == 0
