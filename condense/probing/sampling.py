"""The paper's text sampler: for repetition r, a random stretch of a corpus's rows, seeded by r.

The authors' ``get_random_long_text(dataset, min_word_count=1024, max_word_count=1280,
random_seed=r)``, for r = 0 .. num_seqs - 1: ``rng = numpy.random.default_rng(seed=r)``; a start
row ``rng.integers(0, int(len(train) * 0.95))``; then rows are appended to the text, with no
separator, while it has fewer than 1024 words; the text is then tokenised with truncation to 512
tokens. Their early stop above 1280 words never changes the text (a text of more than 1280 words
has at least 1024, so the loop ends then anyway) and is left out. A stretch that reaches the end
of the rows stops there (the authors' code would fail).

Words are counted by whitespace (``len(text.split())``), not NLTK's ``word_tokenize``, which
needs its ``punkt_tab`` data downloaded at run time. ``word_tokenize`` splits every
whitespace-separated word into one or more tokens (punctuation, clitics), so it never counts
fewer: the whitespace count reaches 1024 no earlier, and condense's text is the authors' text
followed by zero or more further rows. Tokenised and truncated to 512 tokens, the two are the same
whenever the authors' text alone is well over 512 tokens (only its last word can tokenise
differently once more text follows), which 1024 words are with any subword tokenizer (a word is
at least one token); tests/test_paper_sampler.py checks this with NLTK's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from condense.errors import CondenseError
from condense.probing.corpus import TokenSequence, encode

__all__ = ["MIN_WORDS", "START_FRACTION", "count_words", "paper_stretch", "paper_sequences"]

MIN_WORDS = 1024
START_FRACTION = 0.95  # start rows are drawn from the first 95% of the rows


def count_words(text: str) -> int:
    """Whitespace-separated words (see the module docstring for why not NLTK's word_tokenize)."""
    return len(text.split())


def paper_stretch(rows: Sequence[str], repetition: int, min_words: int = MIN_WORDS,
                  words=count_words) -> tuple[str, int, int]:
    """(text, first row, row after the last) of repetition ``repetition``: the rows from a start
    drawn with ``numpy.random.default_rng(seed=repetition)``, joined with no separator until the
    text has ``min_words`` words by ``words`` (or the rows run out)."""
    high = int(len(rows) * START_FRACTION)
    if high < 1:
        raise CondenseError(f"the paper sampler needs a corpus of at least 2 rows, this one has {len(rows)}")
    start = int(np.random.default_rng(seed=repetition).integers(0, high))
    text, end = "", start
    while words(text) < min_words and end < len(rows):
        text += rows[end]
        end += 1
    return text, start, end


def paper_sequences(rows: Sequence[str], tokenizer, max_length: int, num_seqs: int,
                    label: str = "row") -> list[TokenSequence]:
    """One sequence per repetition r = 0 .. num_seqs - 1: :func:`paper_stretch` tokenised with
    the tokenizer's special tokens and truncated to ``max_length``; named ``label[i]`` per row."""
    sequences = []
    for r in range(num_seqs):
        text, start, end = paper_stretch(rows, r)
        names = tuple(f"{label}[{i}]" for i in range(start, end))
        sequences.append(encode(tokenizer, text, names, start, max_length))
    return [s for s in sequences if s.input_ids]
