"""Every layers.csv column against an independent float64 numpy reference.

The reference reads ``output_hidden_states`` one unpadded sequence at a time and computes each
column by its definition (all pairs i < j, full SVDs, medians, ...), so it shares nothing with the
probe's hooks, batching, upper-triangle strips, Lanczos iteration or worker threads. It is what
keeps the restructured probe honest: the same numbers as the definitions, to float32 precision
(or to ~1e-9 with ``--precision float64``).
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import transformers

import condense
from condense.metrics.geometry import cone_log10_sphere_fraction
from condense.probing.corpus import build_sequences, read_documents
from tests.reference import hidden_states

BIN = 2 / 4096  # width of the quantile histogram's bins
ANGLE_BIN = 0.05


def hidden_states_by_sequence(folder, corpus, max_length, num_seqs):
    """Each sequence's counted rows (special tokens are not counted by default) at every entry, and the config."""
    states = hidden_states(folder, corpus, max_length, num_seqs)
    return [[h[~s.special] for h in s.layers] for s in states], transformers.AutoConfig.from_pretrained(folder)


def reference_columns(layers_by_seq: list[np.ndarray], dim: int, spectrum_seqs: int) -> dict:
    """The layers.csv columns of one layer, from each sequence's counted token rows [n_b, D]."""
    seqs = [x for x in layers_by_seq if len(x) >= 2]
    pairs, angles, norms, massive, ratios, dim_scaled = [], [], [], [], [], []
    spectra = {"mev": [], "sv_entropy": [], "effective_rank": [], "hf_lf_ratio": []}
    for b, x in enumerate(seqs):
        n = np.linalg.norm(x, axis=1)
        u = x / np.maximum(n, 1e-8)[:, None]
        c = np.clip(u @ u.T, -1, 1)
        pairs.append(c[np.triu_indices(len(x), 1)])
        axis = u.sum(0) / np.linalg.norm(u.sum(0))
        angles.append(np.degrees(np.arccos(np.clip(u @ axis, -1, 1))))
        norms.append(n)
        median = np.sort(n)[(len(n) - 1) // 2]  # torch's median: the lower middle value for even counts
        ratios.append(n.max() / median)
        massive += [p for p in np.flatnonzero(n > 100 * median)]
        s = x / np.maximum(np.sqrt((x ** 2).mean(0)), 1e-8)
        us = s / np.linalg.norm(s, axis=1, keepdims=True)
        cs = us @ us.T
        dim_scaled.append(cs[~np.eye(len(x), dtype=bool)].mean())
        if b < spectrum_seqs:
            sv = np.linalg.svd(x, compute_uv=False)
            p = sv[sv > 0] / sv.sum()
            entropy = -(p * np.log(p)).sum()
            mu = x.mean(0)
            spectra["mev"].append(sv[0] ** 2 / (sv ** 2).sum())
            spectra["sv_entropy"].append(entropy)
            spectra["effective_rank"].append(math.exp(entropy))
            spectra["hf_lf_ratio"].append(np.linalg.norm(x - mu, ord=2) / (math.sqrt(len(x)) * np.linalg.norm(mu)))
    pairs, angles, norms = np.concatenate(pairs), np.concatenate(angles), np.concatenate(norms)
    p95 = order_statistics(angles, 0.95)
    cols = {"n_seqs": len(seqs), "n_tokens": len(norms), "n_pairs": len(pairs), "mean_cos": pairs.mean(),
            "std_cos": pairs.std(), "mean_pair_angle_deg": np.degrees(np.arccos(pairs)).mean(),
            "cone_half_angle_mean_deg": angles.mean(), "cone_half_angle_max_deg": angles.max(),
            "cone_half_angle_p95_deg": p95, "norm_mean": norms.mean(), "norm_max": norms.max(),
            "norm_max_over_median": np.mean(ratios), "n_massive_tokens": len(massive),
            "mean_cos_dim_scaled": np.mean(dim_scaled), **{k: np.mean(v) for k, v in spectra.items()}}
    for q in (5, 25, 50, 75, 95):
        cols[f"q{q:02d}_cos"] = order_statistics(pairs, q / 100)
    cols["density"] = np.histogram(pairs, bins=128, range=(-1, 1), density=True)[0]
    cols["cone_fraction_bracket"] = (cone_log10_sphere_fraction(p95[0] - ANGLE_BIN, dim),
                                     cone_log10_sphere_fraction(p95[1] + ANGLE_BIN, dim))
    return cols


def order_statistics(values: np.ndarray, q: float) -> tuple[float, float]:
    """The two sorted values around rank q*N: a histogram's q-quantile lies between them (give or take a bin)."""
    v = np.sort(values)
    k = min(max(math.ceil(q * len(v)), 1), len(v) - 1)
    return v[k - 1], v[k]


@dataclass
class Tolerance:
    """rel: plain columns (relative and absolute); angle: mean pair angle, degrees; entropy: sv_entropy and
    effective_rank, relative."""

    rel: float
    angle: float
    entropy: float


# float32 geometry: cosines good to ~1e-7; arccos magnifies a cosine's rounding near 1 (identical tokens:
# 1 - 6e-8 is 0.02 degrees); singular values are square roots of the Gram matrix's eigenvalues, whose
# float32 rounding is ~1e-7 of the largest, so a zero singular value (a repeated token makes X
# rank-deficient) comes out as ~3e-4 of the largest and moves the entropy by a few 1e-3.
FLOAT32 = Tolerance(rel=2e-5, angle=0.08, entropy=5e-3)
FLOAT64 = Tolerance(rel=1e-9, angle=1e-6, entropy=1e-6)  # the same effects at float64 rounding
# real checkpoints: norms in the hundreds (massive activations) and 500-token sums
REAL_FLOAT32 = Tolerance(rel=1e-4, angle=0.08, entropy=5e-3)


def check_against_reference(result, reference_by_seq, dim, spectrum_seqs, tol: Tolerance):
    rtol = tol.rel
    for k, row in result.layers.iterrows():
        ref = reference_columns([seq[int(row.layer)] for seq in reference_by_seq], dim, spectrum_seqs)
        for key in ("n_seqs", "n_tokens", "n_pairs", "n_massive_tokens"):
            assert row[key] == ref[key], (row.layer, key)
        for key in ("mean_cos", "std_cos", "cone_half_angle_mean_deg", "cone_half_angle_max_deg", "norm_mean",
                    "norm_max", "norm_max_over_median", "mean_cos_dim_scaled", "mev", "hf_lf_ratio"):
            assert row[key] == pytest.approx(ref[key], rel=rtol, abs=rtol), (row.layer, key)
        assert row.mean_pair_angle_deg == pytest.approx(ref["mean_pair_angle_deg"], abs=tol.angle), row.layer
        for key in ("sv_entropy", "effective_rank"):
            assert row[key] == pytest.approx(ref[key], rel=tol.entropy), (row.layer, key)
        for q in (5, 25, 50, 75, 95):  # read from a 4096-bin histogram
            lo, hi = ref[f"q{q:02d}_cos"]
            assert lo - BIN - rtol <= row[f"q{q:02d}_cos"] <= hi + BIN + rtol, (row.layer, q)
        lo, hi = ref["cone_half_angle_p95_deg"]  # 0.05-degree bins
        assert lo - ANGLE_BIN - rtol <= row.cone_half_angle_p95_deg <= hi + ANGLE_BIN + rtol, row.layer
        lo, hi = ref["cone_fraction_bracket"]
        assert lo - rtol <= row.cone_log10_sphere_fraction <= hi + rtol, row.layer
        # histograms.npz: two pairs' worth of tolerance for cosines that sit on a bin edge
        np.testing.assert_allclose(result.histograms[k], ref["density"], atol=2 / ref["n_pairs"] / (2 / 128) + rtol)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("precision, tol", [("float32", FLOAT32), ("float64", FLOAT64)])
def test_every_column_matches_the_float64_reference(tiny_models, docs_jsonl, arch, precision, tol):
    folder = tiny_models[arch]
    # batch 3: padding inside batches; 40 tokens > D = 32: the spectrum's n > D branch for most sequences
    result = condense.probe(str(folder), corpus=str(docs_jsonl), num_seqs=6, max_length=40, batch_size=3,
                            spectrum_seqs=4, precision=precision, quiet=True)
    reference, config = hidden_states_by_sequence(folder, str(docs_jsonl), 40, 6)
    check_against_reference(result, reference, config.hidden_size, 4, tol)


def test_short_sequences_use_the_n_below_d_branch(tiny_models, docs_jsonl):
    folder = tiny_models["llama"]  # 20 tokens < D = 32
    result = condense.probe(str(folder), corpus=str(docs_jsonl), num_seqs=5, max_length=20, batch_size=2,
                            spectrum_seqs=5, precision="float64", quiet=True)
    reference, config = hidden_states_by_sequence(folder, str(docs_jsonl), 20, 5)
    check_against_reference(result, reference, config.hidden_size, 5, FLOAT64)


@pytest.mark.slow
@pytest.mark.parametrize("alias, max_length", [("smollm2-135m", 96), ("minilm-l6", 128)])
def test_real_checkpoint_matches_the_float64_reference(alias, max_length, tmp_path):
    """Real weights: massive activations, outlier dimensions, a near-rank-one late layer."""
    from condense.models import load_model

    loaded = load_model(alias, device="cpu")
    result = condense.probe(alias, corpus="builtin", num_seqs=4, max_length=max_length, batch_size=3,
                            spectrum_seqs=4, quiet=True)
    seqs = build_sequences(read_documents("builtin"), loaded.tokenizer, max_length, 4)
    reference = []
    for s in seqs:
        with torch.no_grad():
            hs = loaded.model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states
        counted = ~np.array(s.special)
        reference.append([h[0].double().numpy()[counted] for h in hs])
    check_against_reference(result, reference, loaded.info["hidden_size"], 4, REAL_FLOAT32)


@pytest.fixture(scope="module")
def wide_llama(tokenizer, tmp_path_factory):
    """A tiny random Llama with D = 128: sequences of 100 tokens are wider than a 64-row pair strip and
    still have n <= D, the branch real checkpoints take (the spectrum from the pair products)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256)
    folder = tmp_path_factory.mktemp("wide_llama")
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_sequences_wider_than_a_pair_strip_with_n_below_d(wide_llama, docs_jsonl):
    """The fast twin of the real-checkpoint test: S = 100 > 64 (several strips of pair products) and
    n = 98 <= D = 128 (the spectrum reuses those products)."""
    result = condense.probe(str(wide_llama), corpus=str(docs_jsonl), num_seqs=4, max_length=100, batch_size=2,
                            spectrum_seqs=4, precision="float64", quiet=True)
    reference, config = hidden_states_by_sequence(wide_llama, str(docs_jsonl), 100, 4)
    assert all(64 < len(seq[0]) <= config.hidden_size for seq in reference)
    check_against_reference(result, reference, config.hidden_size, 4, FLOAT64)
