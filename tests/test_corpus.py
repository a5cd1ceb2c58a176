"""Corpus readers, the paper's document joining, and their errors."""

import json

import pytest

from condense.errors import CondenseError
from condense.probing.corpus import Document, build_sequences, read_documents, token_hash


def test_builtin_is_offline_prose():
    docs = list(read_documents("builtin"))
    assert len(docs) > 50 and sum(len(d.text) for d in docs) > 400_000
    assert docs[0].name.startswith("pydoc:")


def test_txt_blank_line_documents(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("first doc\nstill first\n\n\n  \nsecond doc\n\nthird")
    docs = list(read_documents(str(p)))
    assert [d.text for d in docs] == ["first doc\nstill first", "second doc", "third"]
    assert docs[1].name == "c.txt#2"


def test_folder_of_txt_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay\n\nay two")
    (tmp_path / "skip.md").write_text("not read")
    assert [d.text for d in read_documents(str(tmp_path))] == ["ay", "ay two", "bee"]


def test_jsonl_field_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"body": "hello"}) + "\n\n" + json.dumps({"body": " "}) + "\n")
    assert [d.text for d in read_documents(str(p), text_field="body")] == ["hello"]
    with pytest.raises(CondenseError, match=r"line 1 .* no field 'text' \(it has: body\)"):
        read_documents(str(p))
    p.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(CondenseError, match="line 2 of .* not valid JSON"):
        read_documents(str(p))


@pytest.mark.parametrize("content, message", [("", "no usable text"), ("\n\n  \n", "no usable text")])
def test_empty_corpora(tmp_path, content, message):
    p = tmp_path / "e.txt"
    p.write_text(content)
    with pytest.raises(CondenseError, match=message):
        read_documents(str(p))


def test_unknown_spec_and_unsupported_file(tmp_path):
    with pytest.raises(CondenseError, match="unknown corpus 'nope'.*wikipedia"):
        read_documents("nope")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CondenseError, match="unsupported corpus file"):
        read_documents(str(tmp_path / "x.csv"))


def test_shuffle_is_seeded():
    a = [d.name for d in read_documents("builtin", shuffle=True, seed=1)]
    b = [d.name for d in read_documents("builtin", shuffle=True, seed=1)]
    c = [d.name for d in read_documents("builtin", shuffle=True, seed=2)]
    assert a == b and a != c and sorted(a) == sorted(d.name for d in read_documents("builtin"))


def test_short_documents_are_joined_to_reach_max_length(tokenizer):
    docs = [Document(f"d{i}", f"word{i} " * 10) for i in range(30)]  # ~20 tokens each
    seqs = build_sequences(iter(docs), tokenizer, max_length=64, num_seqs=3)
    assert len(seqs) == 3
    assert all(len(s.input_ids) == 64 for s in seqs)
    assert seqs[0].documents[:2] == ("d0", "d1") and len(seqs[0].documents) > 2
    assert seqs[0].special[0] and seqs[0].special[-1]  # [CLS] ... [SEP] with default special tokens
    assert seqs[1].documents[0] == f"d{len(seqs[0].documents)}"  # the next sequence starts after the join


def test_last_sequence_may_be_short_and_hash_is_stable(tokenizer):
    docs = [Document("a", "alpha " * 100), Document("b", "beta gamma")]
    seqs = build_sequences(iter(docs), tokenizer, max_length=32, num_seqs=10)
    assert [len(s.input_ids) for s in seqs] == [32, 4]
    assert token_hash(seqs) == token_hash(build_sequences(iter(docs), tokenizer, 32, 10))
    assert token_hash(seqs) != token_hash(seqs[:1])


def test_hub_preset_unreachable_is_one_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CondenseError, match="cannot read corpus preset 'imdb'"):
        read_documents("imdb")


def test_joined_documents_are_separated_by_a_blank_line_in_the_tokens():
    """A byte-level BPE tokenizer (GPT-2's kind) keeps whitespace as tokens, so the blank line between
    joined documents is in the model's input exactly: the ids are those of "a\\n\\nb" tokenized whole.
    (WordPiece normalises whitespace away and cannot tell a blank line from a space.)"""
    from tests.hub_fixtures import tiny_tokenizer

    tok = tiny_tokenizer()
    docs = [Document("a", "The first document."), Document("b", "The second one."), Document("c", "x " * 200)]
    first = build_sequences(iter(docs), tok, max_length=24, num_seqs=1)[0]
    assert first.documents[:2] == ("a", "b")
    whole = tok("The first document.\n\nThe second one.\n\n" + "x " * 200)["input_ids"]
    assert first.input_ids == whole[:len(first.input_ids)]
    assert tok.decode(first.input_ids).startswith("The first document.\n\nThe second one.\n\n")
