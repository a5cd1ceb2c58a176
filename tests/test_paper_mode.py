"""Paper mode (``aggregate="paper"``) through ``condense.probe`` against a numpy transcription of the
convention: the 1e-3 norm floor (with a planted near-zero token), ragged lengths, the first token dropped,
and every summary column (quantiles, pair angle, density) of the averaged matrix."""

import numpy as np
import pytest
import torch
import transformers

import condense
from condense.probing.corpus import build_sequences, read_documents
from condense.results import HIST_EDGES
from tests.reference import hidden_states, paper_average

SMALL = dict(num_seqs=5, max_length=40, quiet=True, spectrum_seqs=0, aggregate="paper")
QUANTILE_ERROR = 2 / 4096  # README: quantiles come from a 4096-bin histogram


@pytest.fixture(scope="module")
def near_zero_gpt2(tiny_gpt2, docs_jsonl_module, tmp_path_factory):
    """Tiny GPT-2 whose embedding output of the corpus's most frequent token has norm 1e-5.

    Position embeddings are zeroed, so entry 0 is the token embedding alone; a norm of 1e-5 sits
    between the paper's floor (1e-3) and the pooled floor (1e-8), so the floor decides its cosines.
    """
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_gpt2)
    ids = [i for seq in build_sequences(read_documents(str(docs_jsonl_module)), tok, 40, 5)
           for i, special in zip(seq.input_ids, seq.special) if not special]
    frequent = int(np.bincount(ids).argmax())
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        row = model.transformer.wte.weight[frequent]
        row.mul_(1e-5 / row.norm())
    folder = tmp_path_factory.mktemp("near_zero")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def docs_jsonl_module(tmp_path_factory):
    """The conftest corpus, module-scoped so the planted model can be built once."""
    import json

    from pydoc_data.topics import topics

    texts = [t.strip() for t in topics.values() if t.strip()][:12]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    lines = [json.dumps({"text": t[: 300 + 150 * i]}) for i, t in enumerate(texts)]
    lines.append(json.dumps({"text": "A short closing document."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def check_against(result, averaged: dict[int, np.ndarray]) -> None:
    """Every cosine column of ``result`` against the summaries of the reference averaged matrices."""
    for _, row in result.layers.iterrows():
        m = averaged[int(row.layer)]
        vals = m[~np.isnan(m)]
        assert row.n_pairs == vals.size
        assert row.mean_cos == pytest.approx(vals.mean(), abs=1e-6)
        assert row.std_cos == pytest.approx(vals.std(), abs=1e-6)
        assert row.mean_pair_angle_deg == pytest.approx(np.degrees(np.arccos(np.clip(vals, -1, 1))).mean(), abs=1e-3)
        for q in (5, 25, 50, 75, 95):  # a quantile of the values, up to one histogram bin
            est = row[f"q{q:02d}_cos"]
            assert (vals <= est + QUANTILE_ERROR).mean() >= q / 100 >= (vals < est - QUANTILE_ERROR).mean()
    for density, layer in zip(result.histograms, result.layers["layer"]):
        m = averaged[int(layer)]
        expected, _ = np.histogram(m[~np.isnan(m)], bins=HIST_EDGES, density=True)
        # float32 matrix entries may sit one bin away from float64 ones at a bin edge
        assert np.abs(density - expected).sum() * (HIST_EDGES[1] - HIST_EDGES[0]) < 0.02


def test_norm_floor_is_the_papers_1e3(near_zero_gpt2, docs_jsonl_module):
    states = hidden_states(near_zero_gpt2, str(docs_jsonl_module), 40, 5)
    floored = {i: paper_average([s.layers[i] for s in states]) for i in range(len(states[0].layers))}
    tiny_floor = paper_average([s.layers[0] for s in states], floor=1e-8)
    assert abs(np.nanmean(tiny_floor) - np.nanmean(floored[0])) > 1e-3  # the planted token matters
    result = condense.probe(str(near_zero_gpt2), corpus=str(docs_jsonl_module), batch_size=2, **SMALL)
    check_against(result, floored)


def test_ragged_entries_average_only_the_texts_that_have_them(tiny_gpt2, docs_jsonl):
    opts = dict(SMALL, num_seqs=50, max_length=120)
    states = hidden_states(tiny_gpt2, str(docs_jsonl), 120, 50)
    lengths = {len(s.special) for s in states}
    assert len(lengths) == 2  # the sampler makes every sequence full but the last: two per-entry counts
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), paper_ragged=True, batch_size=4, **opts)
    check_against(result, {i: paper_average([s.layers[i] for s in states]) for i in range(len(states[0].layers))})


@pytest.mark.parametrize("ragged", [False, True])
def test_exclude_first_token_drops_position_zero(tiny_gpt2, docs_jsonl, ragged):
    opts = dict(SMALL, num_seqs=50, max_length=120) if ragged else SMALL
    n, length = opts["num_seqs"], opts["max_length"]
    states = hidden_states(tiny_gpt2, str(docs_jsonl), length, n)
    result = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), exclude_first_token=True,
                            paper_ragged=ragged, batch_size=3, **opts)
    check_against(result, {i: paper_average([s.layers[i][1:] for s in states]) for i in range(len(states[0].layers))})


@pytest.fixture(scope="module")
def nan_at_position_7(tiny_gpt2, tmp_path_factory):
    """Tiny GPT-2 whose position embedding 7 holds a NaN: every sequence's token 7 is non-finite."""
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        model.transformer.wpe.weight[7, 0] = float("nan")
    folder = tmp_path_factory.mktemp("nan7")
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(folder)
    return folder


def test_nonfinite_exclude_drops_the_token_from_the_averaged_matrix(nan_at_position_7, docs_jsonl):
    """40-token sequences, token 7 excluded in each: the averaged matrix has 39 x 39 entries, not 40 x 40,
    and equals the numpy average of the other 39 tokens."""
    settings = {**SMALL, "layers": "0", "nonfinite": "exclude", "paper_ragged": True}
    row = condense.probe(str(nan_at_position_7), corpus=str(docs_jsonl), **settings).layers.iloc[0]
    assert row.n_pairs == 39 ** 2
    states = [np.delete(s.layers[0], 7, axis=0) for s in hidden_states(nan_at_position_7, str(docs_jsonl), 40, 5)]
    assert row.mean_cos == pytest.approx(float(np.mean(paper_average(states))), abs=1e-6)


def test_nonfinite_exclude_without_ragged_is_one_clear_error(nan_at_position_7, docs_jsonl, tmp_path):
    with pytest.raises(condense.CondenseError, match=r"non-finite hidden state at layer 0, sequence 0, position 7: "
                       r"--nonfinite exclude in --aggregate paper needs --paper-ragged"):
        condense.probe(str(nan_at_position_7), corpus=str(docs_jsonl), layers="0", nonfinite="exclude", **SMALL)
    from tests.test_cli import run

    cli = run("probe", nan_at_position_7, "--corpus", docs_jsonl, "--aggregate", "paper", "--nonfinite", "exclude",
              "--layers", "0", "--num-seqs", 5, "--max-length", 40, "--out", tmp_path / "r", "-q")
    assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.strip().count("\n") == 0 and "--paper-ragged" in cli.stderr and not (tmp_path / "r").exists()
