"""The paper's text sampler (``--sampler paper``) against the authors' own function, offline.

tests/authors_sampler.py holds the authors' ``get_random_long_text``, transcribed. condense counts
words by whitespace, they by NLTK's ``word_tokenize``; these tests show why the first 512 tokens
are the same all the same.
The hub end of it (``--corpus wikipedia`` through ``datasets``) is in tests/test_hub_corpora.py.
"""

import json

import numpy as np
import pytest

from condense.errors import CondenseError
from condense.probing.corpus import read_rows, token_hash
from condense.probing.sampling import count_words, paper_sequences, paper_stretch
from tests.hub_fixtures import corpus_tables, tiny_tokenizer

nltk = pytest.importorskip("nltk")
from tests.authors_sampler import get_random_long_text, nltk_word_tokenize  # needs nltk


def authors_ids(tokenizer, rows, n, key="text", **kwargs):
    """Token ids of the authors' texts for repetitions 0..n-1, tokenised as they do (truncation to 512)."""
    dataset = {"train": [{key: row} for row in rows]}
    texts = [get_random_long_text(dataset, key, random_seed=r, **kwargs) for r in range(n)]
    return [tokenizer(t, truncation=True, max_length=512)["input_ids"] for t in texts], texts


@pytest.fixture(scope="module")
def bpe():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def wiki_rows():
    return corpus_tables()["wikipedia"][2].column("text").to_pylist()


@pytest.mark.parametrize("preset, key", [("wikipedia", "text"), ("pubmed", "long_answer")])
def test_the_first_512_tokens_are_the_authors_whichever_word_counter(bpe, preset, key):
    rows = corpus_tables()[preset][2].column(key).to_pylist()
    expected, texts = authors_ids(bpe, rows, 20, key)
    ours = paper_sequences(rows, bpe, 512, 20)
    assert [s.input_ids for s in ours] == expected
    for r, (seq, text) in enumerate(zip(ours, texts)):
        mine, start, _ = paper_stretch(rows, r)
        assert seq.start_row == start == int(np.random.default_rng(seed=r).integers(0, int(len(rows) * 0.95)))
        assert mine.startswith(text) and len(bpe(text)["input_ids"]) > 512  # their text, maybe more rows after it
    # the counters do disagree (NLTK splits off punctuation), so the texts differ in length, not in their start
    assert any(len(paper_stretch(rows, r)[0]) > len(t) for r, t in enumerate(texts))
    assert all(count_words(t) <= len(nltk_word_tokenize(t)) for t in texts)


def test_the_counter_matters_only_for_texts_shorter_than_the_truncation(bpe, wiki_rows):
    # texts of 100 words are about 300 tokens: where the counters stop at different rows, the tokens differ
    short = [paper_stretch(wiki_rows, r, min_words=100)[0] for r in range(20)]
    theirs = [get_random_long_text({"train": [{"text": t} for t in wiki_rows]}, "text", 100, 125, random_seed=r)
              for r in range(20)]
    ids = [[bpe(t, truncation=True, max_length=512)["input_ids"] for t in texts] for texts in (short, theirs)]
    differ = [theirs for ours, theirs in zip(*ids) if ours != theirs]
    assert differ and all(len(theirs) < 512 for theirs in differ)  # only texts shorter than the truncation


def test_texts_in_memory_and_a_jsonl_file_are_sampled_row_for_row(tiny_gpt2, tmp_path):
    from condense import probe

    rows = [f"Row {i} says {'something ' * (i % 7)}. " if i % 5 else "" for i in range(300)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    assert read_rows(str(path))[0] == rows  # every record is a row, the empty ones too
    options = dict(sampler="paper", num_seqs=6, max_length=48, layers="last", spectrum_seqs=0, quiet=True)
    from_list, from_file = probe(str(tiny_gpt2), corpus=rows, **options), probe(str(tiny_gpt2), corpus=str(path), **options)
    draws = [int(np.random.default_rng(seed=r).integers(0, int(len(rows) * 0.95))) for r in range(6)]
    for result in (from_list, from_file):
        assert result.run["settings"]["sampler"] == "paper" and result.run["sequence_starts"] == draws
    assert from_list.run["token_hash"] == from_file.run["token_hash"]
    from transformers import AutoTokenizer

    expected = paper_sequences(rows, AutoTokenizer.from_pretrained(tiny_gpt2), 48, 6)
    assert from_list.run["token_hash"] == token_hash(expected)
    assert from_list.run["first_documents"][0] == f"texts[{draws[0]}]" and from_file.run["first_documents"][0] == \
        f"rows.jsonl[{draws[0]}]"


def test_the_sequential_sampler_records_where_each_sequence_starts(tiny_gpt2, docs_jsonl):
    from condense import probe

    result = probe(str(tiny_gpt2), corpus=str(docs_jsonl), num_seqs=4, max_length=40, layers="last", quiet=True)
    assert result.run["settings"]["sampler"] == "sequential"
    starts = result.run["sequence_starts"]
    assert starts[0] == 0 and starts == sorted(starts) and len(set(starts)) == len(starts)


def test_bad_sampler_settings_are_refused(tiny_gpt2):
    from condense import probe

    with pytest.raises(CondenseError, match="--shuffle goes with --sampler sequential"):
        probe(str(tiny_gpt2), sampler="paper", shuffle=True)
    with pytest.raises(CondenseError, match="bad --sampler 'random': use sequential or paper"):
        probe(str(tiny_gpt2), sampler="random")
    with pytest.raises(CondenseError, match="at least 2 rows"):
        paper_sequences(["one row"], None, 8, 1)
