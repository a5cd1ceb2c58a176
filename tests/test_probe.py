"""The probe against a hand-computed reference on tiny models; invariances; flags; paper mode."""

import math

import numpy as np
import pytest
import torch
import transformers

import condense
from condense.errors import CondenseError
from condense.probing.corpus import build_sequences, read_documents

SMALL = dict(num_seqs=5, max_length=40, quiet=True, spectrum_seqs=0)


def reference_pairs(folder, corpus, max_length, num_seqs, keep_special=False, paper=False):
    """Per layer: every within-sequence pair cosine, computed one unpadded sequence at a time in float64."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    seqs = build_sequences(read_documents(corpus), tok, max_length, num_seqs)
    per_layer: dict[int, list] = {}
    for s in seqs:
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states
        for i, h in enumerate(hs):
            x = h[0].double().numpy()
            if not (keep_special or paper):
                x = x[~np.array(s.special)]
            norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-3 if paper else 1e-8)
            c = np.clip((x / norms) @ (x / norms).T, -1, 1)
            per_layer.setdefault(i, []).append(c if paper else c[np.triu_indices(len(c), 1)])
    return per_layer


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3", "bert"])
def test_probe_matches_hand_computed_reference(tiny_models, docs_jsonl, arch):
    folder = tiny_models[arch]
    result = condense.probe(str(folder), corpus=str(docs_jsonl), batch_size=3, **SMALL)
    ref = reference_pairs(folder, str(docs_jsonl), 40, 5)
    assert list(result.layers["layer"]) == sorted(ref)
    for _, row in result.layers.iterrows():
        pairs = np.concatenate(ref[int(row.layer)])
        assert row.n_pairs == len(pairs)
        assert row.mean_cos == pytest.approx(pairs.mean(), abs=1e-5)
        assert row.std_cos == pytest.approx(pairs.std(), abs=1e-5)
    n = len(result.layers)
    np.testing.assert_allclose(result.layers["layer_fraction"], np.arange(n) / (n - 1))
    assert result.run["last_entry_after_final_norm"] is (arch != "bert")
    assert result.run["extraction"] == "hooks"  # verified against output_hidden_states on batch 1


@pytest.mark.parametrize("layers", ["0", "1", "-1", "0,2"])
def test_single_layers_stop_early_and_match_all_layers(tiny_models, docs_jsonl, layers):
    folder = str(tiny_models["llama"])
    full = condense.probe(folder, corpus=str(docs_jsonl), batch_size=2, **SMALL).layers.set_index("layer")
    part = condense.probe(folder, corpus=str(docs_jsonl), batch_size=2, layers=layers, **SMALL).layers
    for _, row in part.iterrows():
        assert row.mean_cos == pytest.approx(full.loc[row.layer, "mean_cos"], abs=1e-6)
        assert row.cone_half_angle_mean_deg == pytest.approx(full.loc[row.layer, "cone_half_angle_mean_deg"], abs=1e-4)


def test_batch_size_and_padding_invariance(tiny_models, tmp_path):
    from pydoc_data.topics import topics

    corpus = tmp_path / "c.txt"  # 9 long documents, then a short tail: the last batch is padded
    corpus.write_text("\n\n".join([" ".join(topics["assert"].split())[:900 + 40 * i] for i in range(9)]
                                    + ["a short tail document"]))
    opts = dict(corpus=str(corpus), num_seqs=50, max_length=120, quiet=True, spectrum_seqs=50)
    lengths = [len(s.input_ids) for s in build_sequences(
        read_documents(str(corpus)), transformers.AutoTokenizer.from_pretrained(tiny_models["llama"]), 120, 50)]
    assert len(set(lengths)) > 1 and len(lengths) % 4 != 1
    one = condense.probe(str(tiny_models["llama"]), batch_size=1, **opts).layers
    four = condense.probe(str(tiny_models["llama"]), batch_size=4, **opts).layers
    numeric = [c for c in one.columns if one[c].dtype.kind == "f"]
    np.testing.assert_allclose(one[numeric].to_numpy(), four[numeric].to_numpy(), atol=1e-5, rtol=1e-5)


def test_determinism(tiny_gpt2, docs_jsonl, tmp_path):
    a = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL).save(tmp_path / "a")
    b = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL).save(tmp_path / "b")
    assert (a / "layers.csv").read_bytes() == (b / "layers.csv").read_bytes()
    with np.load(a / "histograms.npz") as x, np.load(b / "histograms.npz") as y:
        np.testing.assert_array_equal(x["density"], y["density"])


def test_special_tokens_excluded_by_default_and_kept_on_request(tiny_gpt2, docs_jsonl):
    default = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL).layers
    kept = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), keep_special_tokens=True, **SMALL).layers
    assert (kept["n_tokens"] - default["n_tokens"] == 2 * 5).all()  # [CLS] and [SEP] per sequence
    ref = reference_pairs(tiny_gpt2, str(docs_jsonl), 40, 5, keep_special=True)
    assert kept["mean_cos"].iloc[-1] == pytest.approx(np.concatenate(ref[len(kept) - 1]).mean(), abs=1e-5)


def test_exclude_first_token_and_centring_change_what_they_should(tiny_gpt2, docs_jsonl):
    base = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), keep_special_tokens=True, **SMALL).layers
    first = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), keep_special_tokens=True,
                           exclude_first_token=True, **SMALL).layers
    assert (base["n_tokens"] - first["n_tokens"] == 5).all()
    centred = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), center="sequence", **SMALL).layers
    # centring each sequence makes its tokens sum to zero: sum_{i!=j} cos is no longer positive-biased
    assert (centred["mean_cos"] < base["mean_cos"]).all()
    assert (centred["cone_half_angle_mean_deg"] > 60).all()
    corpus = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), center="corpus", **SMALL).layers
    assert not np.allclose(corpus["mean_cos"], centred["mean_cos"])
    assert (corpus["n_tokens"] == centred["n_tokens"]).all()


def test_paper_mode_matches_numpy_transcription(tiny_models, docs_jsonl):
    folder = tiny_models["bert"]
    result = condense.probe(str(folder), corpus=str(docs_jsonl), aggregate="paper", batch_size=2, **SMALL)
    ref = reference_pairs(folder, str(docs_jsonl), 40, 5, paper=True)
    for _, row in result.layers.iterrows():
        mats = ref[int(row.layer)]
        avg = np.mean(mats, axis=0)  # element-wise mean across texts, diagonal kept
        assert row.mean_cos == pytest.approx(avg.mean(), abs=1e-6)
        assert row.std_cos == pytest.approx(avg.std(), abs=1e-6)
        assert row.n_pairs == 40 * 40
    assert result.run["settings"]["aggregate"] == "paper"
    pooled = condense.probe(str(folder), corpus=str(docs_jsonl), **SMALL)
    assert list(result.layers.columns) == list(pooled.layers.columns)


def test_paper_mode_unequal_lengths(tiny_gpt2, docs_jsonl):
    with pytest.raises(CondenseError, match=r"equal length, but docs.jsonl:\d+ gives"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), aggregate="paper", num_seqs=50,
                       max_length=120, quiet=True)
    ragged = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), aggregate="paper", paper_ragged=True,
                            num_seqs=50, max_length=120, quiet=True, spectrum_seqs=0)
    assert np.isfinite(ragged.layers["mean_cos"]).all()


def test_planted_massive_activation_is_flagged(tiny_gpt2, docs_jsonl):
    model = transformers.AutoModel.from_pretrained(tiny_gpt2)
    # a huge bias on the position-3 embedding plants one massive token in every sequence's layer 0; one on
    # position 0 makes the [CLS] special token massive too (as a BOS attention sink is in real models)
    with torch.no_grad():
        model.wpe.weight[3] += 5000.0
        model.wpe.weight[0] += 5000.0
    from condense.models import LoadedModel
    from condense.probing.probe import ProbeSettings, probe_loaded

    loaded = LoadedModel(model, transformers.AutoTokenizer.from_pretrained(tiny_gpt2),
                         {"hidden_size": 32, "model": "planted"})
    result = probe_loaded(loaded, ProbeSettings(corpus=str(docs_jsonl), num_seqs=5, max_length=40))
    first = result.layers.iloc[0]
    assert first.n_massive_tokens == 5 and first.massive_positions == "3:5"  # the excluded [CLS] is not counted
    kept = probe_loaded(loaded, ProbeSettings(corpus=str(docs_jsonl), num_seqs=5, max_length=40,
                                              keep_special_tokens=True)).layers.iloc[0]
    assert kept.n_massive_tokens == 10 and kept.massive_positions == "0:5;3:5"


def test_nonfinite_hidden_state_is_reported_or_excluded(tiny_gpt2, docs_jsonl):
    from condense.models import LoadedModel
    from condense.probing.probe import ProbeSettings, probe_loaded

    model = transformers.AutoModel.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        model.wpe.weight[7, 0] = math.nan
    loaded = LoadedModel(model, transformers.AutoTokenizer.from_pretrained(tiny_gpt2),
                         {"hidden_size": 32, "model": "nan"})
    cfg = ProbeSettings(corpus=str(docs_jsonl), num_seqs=5, max_length=40, layers="0")
    with pytest.raises(CondenseError, match="non-finite hidden state at layer 0, sequence 0, position 7"):
        probe_loaded(loaded, cfg)
    cfg.nonfinite = "exclude"
    clean = probe_loaded(loaded, cfg).layers.iloc[0]
    assert clean.n_tokens == 5 * (40 - 2) - 5 and math.isfinite(clean.mean_cos)


def test_bootstrap_columns(tiny_gpt2, docs_jsonl):
    r = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), bootstrap=50, **SMALL)
    lo, hi = r.layers["mean_cos_ci_low"], r.layers["mean_cos_ci_high"]
    assert ((lo <= r.layers["mean_cos"]) & (r.layers["mean_cos"] <= hi)).all()
    assert r.trend["spearman_ci_low"] <= r.trend["spearman_ci_high"]


def test_gaussian_baseline_columns(tiny_gpt2, docs_jsonl):
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)
    r = result.layers
    np.testing.assert_allclose(r["gauss_std_cos"], 1 / math.sqrt(32))
    assert (r["gauss_mean_cos"] == 0).all() and (r["gauss_mean_pair_angle_deg"] == 90).all()
    # the simulated ones: the baseline of the median sequence length and the run's seed, on one thread
    counts = result.run["counts"]
    assert counts["tokens"] == counts["sequences"] * counts["max_seq_len"]  # every sequence full: median known
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = condense.metrics.gaussian_baseline(counts["max_seq_len"], 32, seed=0)
    finally:
        torch.set_num_threads(threads)
    for key in ("mev", "effective_rank", "cone_half_angle_mean_deg", "q95_cos"):
        assert (r[f"gauss_{key}"] == want[key]).all(), key


def _probe_on_one_thread(model: str, corpus: str, done) -> None:
    torch.set_num_threads(1)  # the worker pool then has a single thread, as in a one-CPU ray task
    result = condense.probe(model, corpus=corpus, num_seqs=3, max_length=24, quiet=True, spectrum_seqs=2,
                            corpus_sample=20)
    done.put(len(result.layers))


def test_probe_finishes_with_a_single_worker_thread(tiny_gpt2, docs_jsonl):
    """Nothing the probe runs in its worker pool may wait for another job of the pool: with one worker
    that is a deadlock (the Gaussian baseline's spectra once were such jobs; a hang fails after 240 s)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    done = context.Queue()
    child = context.Process(target=_probe_on_one_thread, args=(str(tiny_gpt2), str(docs_jsonl), done))
    child.start()
    child.join(240)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("a probe with a one-thread worker pool never finished")
    assert child.exitcode == 0 and done.get(timeout=10) > 0


def test_save_load_round_trip(tiny_gpt2, docs_jsonl, tmp_path):
    r = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), **SMALL)
    r.save(tmp_path / "run")
    back = condense.load(tmp_path / "run")
    np.testing.assert_allclose(back.histograms, r.histograms)
    assert back.trend["spearman"] == pytest.approx(r.trend["spearman"])
    assert back.run["token_hash"] == r.run["token_hash"] and len(back.run["token_hash"]) == 64
    numeric = [c for c in r.layers.columns if r.layers[c].dtype.kind in "fi"]
    np.testing.assert_allclose(back.layers[numeric].to_numpy(float), r.layers[numeric].to_numpy(float), rtol=1e-9)
    assert (tmp_path / "run" / "heatmap.png").stat().st_size > 10_000


def test_forward_stops_after_deepest_selected_layer(tiny_models, docs_jsonl):
    from condense.models import LoadedModel
    from condense.probing.probe import ProbeSettings, probe_loaded

    folder = tiny_models["llama"]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    calls = []
    model.layers[-1].register_forward_hook(lambda *_: calls.append(1))
    loaded = LoadedModel(model, transformers.AutoTokenizer.from_pretrained(folder), {"hidden_size": 32, "model": "x"})
    probe_loaded(loaded, ProbeSettings(corpus=str(docs_jsonl), num_seqs=5, max_length=40, batch_size=2, layers="1"))
    assert len(calls) == 1  # only the verifying first batch runs the whole model; 2 later batches stop early
