"""build_sequences at its boundaries: documents are joined until they hold at least max_length tokens."""

from condense.probing.corpus import Document, build_sequences


def test_documents_reaching_exactly_max_length_are_not_joined_further(tokenizer):
    text = "alpha beta gamma delta epsilon"
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    docs = [Document(f"d{i}", text) for i in range(6)]
    seqs = build_sequences(iter(docs), tokenizer, max_length=2 * n, num_seqs=3)
    # two documents hold exactly 2n tokens: enough ("at least max_length"), so each sequence joins two
    assert [s.documents for s in seqs] == [("d0", "d1"), ("d2", "d3"), ("d4", "d5")]
    assert all(len(s.input_ids) == 2 * n for s in seqs)  # truncated to max_length, [CLS] and [SEP] included


def test_one_token_short_joins_the_next_document(tokenizer):
    text = "alpha beta gamma delta epsilon"
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    docs = [Document(f"d{i}", text) for i in range(6)]
    seqs = build_sequences(iter(docs), tokenizer, max_length=2 * n + 1, num_seqs=2)
    assert [s.documents for s in seqs] == [("d0", "d1", "d2"), ("d3", "d4", "d5")]
