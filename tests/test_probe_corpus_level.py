"""The corpus-level columns (exact cross-text cosine, the shared token sample) through ``condense.probe``
on tiny random-weight models, against float64 references over all token pairs of the corpus; then the
same numbers under other batch sizes, text orders, and what run.json, histograms.npz and `show` hold."""

import json
import math
import pickle

import numpy as np
import pytest
import torch

import condense
from condense.errors import CondenseError
from condense.metrics.cross_text import ROGUE_TOP
from condense.metrics.token_sample import token_keys
from condense.probing.corpus_level import sample_size
from tests.reference import cross_text_reference, hidden_states, unit
from tests.test_paper_mode import docs_jsonl_module, near_zero_gpt2  # noqa: F401  (fixtures)

SMALL = dict(num_seqs=6, max_length=40, quiet=True, spectrum_seqs=0)
EXACT = ("cross_mean_cos", "cross_mean_cos_text_weighted", "corpus_resultant_length", "cross_n_pairs")
SAMPLE = ("isoscore", "mev_centred", "twonn_id", "twonn_id_half", "twonn_id_quarter", "sample_cross_mean_cos",
          "sample_tokens", "sample_texts", "gauss_isoscore", "gauss_mev_centred", "gauss_twonn_id")


def counted_rows(states, paper: bool, drop_first: bool) -> dict[int, list[np.ndarray]]:
    """Per layer, each text's counted rows: pooled drops special tokens; the paper keeps every token."""
    out = {}
    for i in range(len(states[0].layers)):
        out[i] = []
        for s in states:
            keep = np.ones(len(s.special), bool) if paper else ~s.special
            if drop_first:
                keep[0] = False
            out[i].append(s.layers[i][keep])
    return out


def check_exact(result, per_layer, floor: float, tol: float) -> None:
    for _, row in result.layers.iterrows():
        ref = cross_text_reference(per_layer[int(row.layer)], floor)
        for key in EXACT:
            assert row[key] == pytest.approx(ref[key], abs=tol), (row.layer, key)
        assert row.within_minus_cross == pytest.approx(row.mean_cos - ref["cross_mean_cos"], abs=tol)
        top = sorted(range(len(ref["contribution"])), key=lambda d: (-ref["contribution"][d], d))[:ROGUE_TOP]
        assert [int(row[f"rogue_dim_{k}"]) for k in range(1, ROGUE_TOP + 1)] == top, row.layer
        for k, d in enumerate(top, start=1):
            share = ref["contribution"][d] / ref["cross_mean_cos"] if ref["cross_mean_cos"] > 0 else math.nan
            assert row[f"rogue_share_{k}"] == pytest.approx(share, abs=1e3 * tol, nan_ok=True), (row.layer, k)
        n = sum(len(x) for x in per_layer[int(row.layer)])
        assert row.gauss_corpus_resultant_length == pytest.approx(1 / math.sqrt(n))
        assert row.gauss_cross_mean_cos_sd == pytest.approx(math.sqrt(1 / (result.run["hidden_size"] * row.cross_n_pairs)))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_pooled_exact_columns_match_all_pairs(tiny_models, docs_jsonl, arch):
    folder = tiny_models[arch]
    result = condense.probe(str(folder), corpus=str(docs_jsonl), batch_size=3, precision="float64", **SMALL)
    states = hidden_states(folder, str(docs_jsonl), 40, 6)
    check_exact(result, counted_rows(states, paper=False, drop_first=False), 1e-8, 1e-10)


def test_float32_geometry_is_within_float32_rounding(tiny_models, docs_jsonl):
    folder = tiny_models["llama"]
    result = condense.probe(str(folder), corpus=str(docs_jsonl), batch_size=4, **SMALL)
    states = hidden_states(folder, str(docs_jsonl), 40, 6)
    per_layer = counted_rows(states, paper=False, drop_first=False)
    for _, row in result.layers.iterrows():
        ref = cross_text_reference(per_layer[int(row.layer)])
        assert row.cross_mean_cos == pytest.approx(ref["cross_mean_cos"], abs=1e-5)


@pytest.mark.parametrize("drop_first", [False, True])
def test_paper_mode_counts_the_papers_tokens(tiny_gpt2, docs_jsonl, drop_first):
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), aggregate="paper", paper_ragged=True,
                            exclude_first_token=drop_first, precision="float64", batch_size=4, **SMALL)
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 40, 6)
    check_exact(result, counted_rows(states, paper=True, drop_first=drop_first), 1e-3, 1e-10)


def expected_sample(states, k: int, seed: int, paper: bool, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """The k counted tokens (position 0 out) with the smallest keys: their rows at ``layer`` and text ids."""
    rows, texts, keys = [], [], []
    for t, s in enumerate(states):
        keep = np.ones(len(s.special), bool) if paper else ~s.special
        positions = np.flatnonzero(keep & (np.arange(len(keep)) > 0))
        keys += token_keys(seed, torch.tensor([t]), torch.tensor(positions)).tolist()
        rows += [s.layers[layer][p] for p in positions]
        texts += [t] * len(positions)
    chosen = np.argsort(np.array(keys), kind="stable")[:k]
    return np.array(rows)[chosen], np.array(texts)[chosen]


@pytest.mark.parametrize("aggregate", ["pooled", "paper"])
def test_the_sample_is_the_k_smallest_keys_of_the_counted_tokens(tiny_gpt2, docs_jsonl, aggregate):
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), aggregate=aggregate, paper_ragged=True,
                            corpus_sample=50, seed=3, batch_size=2, **SMALL)
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 40, 6)
    for _, row in result.layers.iterrows():
        x, texts = expected_sample(states, 50, 3, aggregate == "paper", int(row.layer))
        u = unit(x)
        cross = texts[:, None] != texts[None, :]
        assert row.sample_tokens == 50 and row.sample_texts == len(set(texts))
        assert row.sample_cross_mean_cos == pytest.approx((u @ u.T)[cross].mean(), abs=1e-5), row.layer
        centred = x - x.mean(axis=0)
        eig = np.linalg.eigvalsh(centred.T @ centred)
        assert row.mev_centred == pytest.approx(eig[-1] / eig.sum(), abs=1e-5), row.layer
    record = result.run["corpus_sample"]
    assert record.pop("finalize_seconds") > 0
    assert record == {"k": 50, "tokens": 50, "texts": int(result.layers.sample_texts[0]), "seed": 3,
                      "position_0": "left out"}


def test_other_batch_sizes_give_the_same_columns(tiny_models, docs_jsonl):
    folder = tiny_models["llama"]
    runs = [condense.probe(str(folder), corpus=str(docs_jsonl), batch_size=b, precision="float64",
                           corpus_sample=60, **SMALL) for b in (1, 4, 6)]
    for other in runs[1:]:
        for key in EXACT + ("within_minus_cross", "rogue_dim_1", "rogue_share_1"):
            np.testing.assert_allclose(other.layers[key], runs[0].layers[key], rtol=0, atol=1e-12, err_msg=key)
        for key in ("sample_tokens", "sample_texts"):
            assert (other.layers[key] == runs[0].layers[key]).all()
        for key in SAMPLE:  # the same tokens; hidden states of a padded batch differ at float rounding
            np.testing.assert_allclose(other.layers[key], runs[0].layers[key], rtol=1e-8, atol=1e-8, err_msg=key)
        np.testing.assert_allclose(other.cross_histograms, runs[0].cross_histograms, atol=1e-12)


def test_text_order_leaves_the_exact_columns_unchanged(tiny_gpt2):
    from pydoc_data.topics import topics

    texts = [t for t in topics.values() if len(t) > 600][:6]  # each longer than 40 tokens: one sequence each
    forward = condense.probe(str(tiny_gpt2), corpus=texts, precision="float64", batch_size=3, corpus_sample=0,
                             **SMALL)
    backward = condense.probe(str(tiny_gpt2), corpus=texts[::-1], precision="float64", batch_size=2,
                              corpus_sample=0, **SMALL)
    assert forward.run["counts"] == backward.run["counts"] and forward.run["counts"]["sequences"] == 6
    for key in EXACT + ("rogue_dim_1", "rogue_share_1"):
        np.testing.assert_allclose(backward.layers[key], forward.layers[key], rtol=0, atol=1e-12, err_msg=key)


def test_run_folder_keeps_the_columns_and_the_cross_density(tiny_gpt2, docs_jsonl, tmp_path):
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), corpus_sample=40, **SMALL)
    result.save(tmp_path / "run", heatmap=False)
    with np.load(tmp_path / "run" / "histograms.npz") as npz:
        assert npz["cross_density"].shape == result.histograms.shape
        np.testing.assert_array_equal(npz["cross_density"], result.cross_histograms)
    density = result.cross_histograms
    assert np.allclose(density.sum(axis=1) * (2 / 128), 1.0)
    again = condense.load(tmp_path / "run")
    np.testing.assert_array_equal(again.cross_histograms, result.cross_histograms)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["corpus_sample"]["k"] == 40
    text = again.summary()
    assert "cross_mean_cos" in text and "token sample: 40 tokens (K = 40)" in text and "isoscore" in text
    for baseline in ("iso_isoscore", "iso_mev_centred", "iso_twonn_id"):  # every sample column beside its baseline
        assert baseline in text


def test_corpus_sample_zero_turns_the_sample_off_but_keeps_the_exact_columns(tiny_gpt2, docs_jsonl, tmp_path):
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), corpus_sample=0, **SMALL)
    assert "cross_mean_cos" in result.layers and "isoscore" not in result.layers
    assert result.cross_histograms is None and result.run["corpus_sample"] == {"k": 0}
    result.save(tmp_path / "run", heatmap=False)
    with np.load(tmp_path / "run" / "histograms.npz") as npz:
        assert "cross_density" not in npz.files
    assert "token sample: off" in condense.load(tmp_path / "run").summary()


def test_default_sample_size_follows_the_memory_budget(tiny_gpt2, docs_jsonl):
    from condense.metrics.token_sample import sample_size_for_budget
    from condense.probing.corpus_level import AUTO_CAP

    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), layers="0,2", keep_special_tokens=True, **SMALL)
    assert result.run["corpus_sample"]["k"] == sample_size_for_budget(2, 32, cap=AUTO_CAP) == AUTO_CAP == 1024
    # the budget binds before the cap for wide, deep models: K x layers x D x 4 bytes <= 256 MB
    assert sample_size("auto", 64, 8192) == 2 ** 28 // (64 * 8192 * 4) == 128
    # [CLS] at position 0 counts in the pooled statistics (kept) but is left out of the sample
    assert (result.layers.sample_tokens == result.layers.n_tokens - 6).all()


@pytest.mark.parametrize("value", [-1, 3, 15, "many", 2.5, True])
def test_bad_corpus_sample_is_one_clear_error(tiny_gpt2, value):
    with pytest.raises(CondenseError, match=r"bad --corpus-sample .*0 to turn the sample off, or auto"):
        condense.probe(str(tiny_gpt2), corpus_sample=value, **SMALL)


def test_paper_mode_floors_norms_at_1e3(near_zero_gpt2, docs_jsonl_module):
    """A token of norm 1e-5 at entry 0: the paper's floor (1e-3) shrinks its unit vector to 1e-2, the pooled one would not."""
    result = condense.probe(str(near_zero_gpt2), corpus=str(docs_jsonl_module), aggregate="paper", paper_ragged=True,
                            precision="float64", batch_size=3, layers="0", **SMALL)
    states = hidden_states(near_zero_gpt2, str(docs_jsonl_module), 40, 6)
    per_layer = counted_rows(states, paper=True, drop_first=False)
    assert min(np.linalg.norm(x, axis=1).min() for x in per_layer[0]) < 1e-4  # the planted token is there
    check_exact(result, per_layer, 1e-3, 1e-10)


def test_end_of_run_statistics_in_the_worker_threads_equal_the_serial_ones():
    """start_samples computes every layer's sample statistics in the worker pool, sharing one pair
    index among the layers that keep the same tokens; each layer's columns and density must be those
    of its own serial finalize (layer 2 here counts other tokens, so it cannot share the index)."""
    from condense.metrics.spectrum import worker_pool
    from condense.probing.corpus_level import CorpusLevel

    rng = np.random.default_rng(8)
    layers, dim = [0, 1, 2], 16
    level = CorpusLevel(layers, dim, k=70, seed=1, paper=False, start_at=0)
    for batch in range(8):
        mask = torch.as_tensor(rng.random((3, 12)) < 0.8)
        positions = torch.arange(12).expand(3, 12)
        for i in layers:
            hidden = torch.as_tensor(rng.standard_normal((3, 12, dim)) + i, dtype=torch.float32)
            counted = mask & (positions % 2 == 0) if i == 2 else mask
            norms = hidden.norm(dim=-1)
            u = hidden / norms.unsqueeze(-1) * counted.unsqueeze(-1)
            level.add(i, level.measure(i, hidden, u, norms, counted, counted, positions, offset=3 * batch))
    assert not torch.equal(level.sample[2].texts, level.sample[0].texts)
    serial = pickle.loads(pickle.dumps(level))
    level.start_samples(worker_pool(2))
    pickle.dumps(level)  # the pending futures are not state
    for i in layers:
        cols, density = level.finalize(i, 0.25)
        want_cols, want_density = serial.finalize(i, 0.25)
        assert cols == pytest.approx(want_cols, rel=1e-12, nan_ok=True), i
        np.testing.assert_allclose(density, want_density, rtol=0, atol=1e-12, err_msg=str(i))
    assert level.finalize_seconds > 0 and level.record(cols)["finalize_seconds"] >= 0
