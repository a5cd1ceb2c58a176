"""The pooled probe through ``condense.probe`` against float64 numpy references, for what the masks
decide: the first token dropped, sequences of exactly two counted tokens, sequence and corpus centring,
and the columns derived from others (cone volume, trend statistics)."""

import math

import numpy as np
import pytest
from scipy import stats

import condense
from condense.metrics import cone_log10_sphere_fraction, depth_trend, last_layers_means
from tests.reference import cone_angles_deg, hidden_states, pooled_pairs

SMALL = dict(num_seqs=5, max_length=40, quiet=True, spectrum_seqs=0)


def counted(states, keep_special: bool, drop_first: bool):
    """Per sequence the bool mask of counted tokens: specials out unless kept, position 0 out if asked."""
    masks = []
    for s in states:
        m = np.ones(len(s.special), bool) if keep_special else ~s.special
        if drop_first:
            m[0] = False
        masks.append(m)
    return masks


def check_pooled(result, per_layer: dict[int, list[np.ndarray]]) -> None:
    """Pooled cosine and token columns of ``result`` against the counted token matrices of each layer."""
    for _, row in result.layers.iterrows():
        xs = per_layer[int(row.layer)]
        pairs = pooled_pairs(xs)
        angles = np.concatenate([cone_angles_deg(x) for x in xs])
        assert row.n_tokens == sum(len(x) for x in xs) and row.n_pairs == len(pairs)
        assert row.mean_cos == pytest.approx(pairs.mean(), abs=1e-5)
        assert row.std_cos == pytest.approx(pairs.std(), abs=1e-5)
        assert row.cone_half_angle_mean_deg == pytest.approx(angles.mean(), abs=1e-3)
        assert row.norm_mean == pytest.approx(np.concatenate([np.linalg.norm(x, axis=1) for x in xs]).mean(), rel=1e-5)


@pytest.mark.parametrize("keep_special", [False, True])
def test_exclude_first_token_drops_position_zero(tiny_gpt2, docs_jsonl, keep_special):
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 40, 5)
    masks = counted(states, keep_special, drop_first=True)
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), keep_special_tokens=keep_special,
                            exclude_first_token=True, batch_size=2, **SMALL)
    check_pooled(result, {i: [s.layers[i][m] for s, m in zip(states, masks)] for i in range(len(states[0].layers))})


def test_sequences_of_exactly_two_counted_tokens_count(tiny_gpt2, docs_jsonl):
    # max_length 4 = [CLS] a b [SEP]: two counted tokens, one pair per sequence
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 4, 6)
    masks = counted(states, keep_special=False, drop_first=False)
    assert all(m.sum() == 2 for m in masks)
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), num_seqs=6, max_length=4, quiet=True,
                            spectrum_seqs=6, batch_size=4)
    per_layer = {i: [s.layers[i][m] for s, m in zip(states, masks)] for i in range(len(states[0].layers))}
    check_pooled(result, per_layer)
    for _, row in result.layers.iterrows():
        xs = per_layer[int(row.layer)]
        assert row.n_seqs == 6 and row.n_pairs == 6
        # two tokens: the mean direction bisects them, so each sits at half the pair angle
        half = [np.degrees(np.arccos(np.clip(pooled_pairs([x])[0], -1, 1))) / 2 for x in xs]
        assert row.cone_half_angle_max_deg == pytest.approx(max(half), abs=1e-3)
        # MEV of each two-row matrix by an exact SVD (the spectrum's branch for fewer tokens than D)
        mev = [np.linalg.svd(x, compute_uv=False)[0] ** 2 / (np.linalg.svd(x, compute_uv=False) ** 2).sum() for x in xs]
        assert row.mev == pytest.approx(np.mean(mev), abs=1e-5)
        # two tokens: X - 1 mu^T has rows +-(x1 - x2) / 2, so HF/LF = |x1 - x2| / |x1 + x2|
        ratio = [np.linalg.norm(x[0] - x[1]) / np.linalg.norm(x[0] + x[1]) for x in xs]
        assert row.hf_lf_ratio == pytest.approx(np.mean(ratio), rel=1e-4)


@pytest.mark.parametrize("center", ["sequence", "corpus"])
def test_centring_subtracts_the_mean_of_counted_tokens(tiny_gpt2, docs_jsonl, center):
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 40, 5)
    masks = counted(states, keep_special=False, drop_first=False)
    per_layer = {}
    for i in range(len(states[0].layers)):
        xs = [s.layers[i][m] for s, m in zip(states, masks)]
        if center == "sequence":
            per_layer[i] = [x - x.mean(axis=0) for x in xs]
        else:
            mu = np.concatenate(xs).mean(axis=0)
            per_layer[i] = [x - mu for x in xs]
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), center=center, batch_size=2, **SMALL)
    check_pooled(result, per_layer)


def test_derived_columns_and_trend_follow_their_definitions(tiny_models, docs_jsonl):
    result = condense.probe(str(tiny_models["llama"]), corpus=str(docs_jsonl), bootstrap=20, **SMALL)
    table = result.layers
    dim = result.run["hidden_size"]
    for _, row in table.iterrows():
        assert row.cone_log10_sphere_fraction == pytest.approx(
            cone_log10_sphere_fraction(row.cone_half_angle_p95_deg, dim), abs=1e-9)
    mean_cos = table["mean_cos"].to_numpy()
    assert result.trend["spearman"] == pytest.approx(stats.spearmanr(table["layer"], mean_cos).statistic)
    assert result.trend["kendall"] == pytest.approx(stats.kendalltau(table["layer"], mean_cos).statistic)
    for key, value in {**depth_trend(table["layer"], mean_cos), **last_layers_means(mean_cos)}.items():
        assert result.trend[key] == pytest.approx(value)
    half = len(mean_cos) // 2
    assert result.trend["last_half"] == pytest.approx(mean_cos[-half:].mean())
    assert result.trend["last1"] == pytest.approx(mean_cos[-1])
    np.testing.assert_allclose(table["layer_fraction"], table["layer"] / (result.run["num_hidden_state_entries"] - 1))
    assert len(table) == result.run["num_hidden_state_entries"]
    assert math.isclose(table["gauss_std_cos"].iloc[0], 1 / math.sqrt(dim))
