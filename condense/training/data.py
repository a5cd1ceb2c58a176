"""Training and held-out text for finetune: a deterministic document split and packed token blocks.

The last ``heldout`` fraction of the corpus documents (in corpus order) is held out; the rest is
tokenised, joined with the tokenizer's end-of-text token and cut into ``seq_len`` blocks, so
training batches hold no padding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from condense.errors import CondenseError
from condense.probing.corpus import Document, TokenSequence, build_sequences, read_documents

__all__ = ["MAX_STREAMED_DOCS", "CorpusSplit", "split_corpus", "pack_blocks", "block_batches", "heldout_sequences"]

# Hub presets stream without end: take this many documents, then split.
MAX_STREAMED_DOCS = 20_000


@dataclass(frozen=True)
class CorpusSplit:
    """Documents for training and, disjoint from them, for the held-out loss and the probes."""

    train: list[Document]
    heldout: list[Document]


def split_corpus(spec: str, text_field: str = "text", heldout: float = 0.1) -> CorpusSplit:
    """Read corpus ``spec`` and hold out its last ``ceil(heldout * n)`` documents (at least one).

    Raises CondenseError when the corpus has fewer than two documents.
    """
    docs = list(itertools.islice(read_documents(spec, text_field), MAX_STREAMED_DOCS))
    if len(docs) < 2:
        raise CondenseError(
            f"corpus {spec!r} has {len(docs)} document(s); finetune needs at least 2 (training and held-out text)"
        )
    n_held = min(max(1, math.ceil(heldout * len(docs))), len(docs) - 1)
    return CorpusSplit(docs[:-n_held], docs[-n_held:])


def pack_blocks(docs: list[Document], tokenizer, seq_len: int) -> torch.Tensor:
    """``[n_blocks, seq_len]`` token ids: the documents tokenised without special tokens, each
    followed by the end-of-text token (EOS, else SEP, else nothing), concatenated and cut into
    full blocks (the remainder is dropped).

    Raises CondenseError when the text does not fill one block.
    """
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(sep)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise CondenseError(
            f"the training documents give {len(ids)} tokens, fewer than one --seq-len {seq_len} block; "
            "lower --seq-len or use a larger corpus"
        )
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def block_batches(blocks: torch.Tensor, batch_size: int, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
    """Endless ``[batch_size, seq_len]`` batches: the blocks in a seeded random order, reshuffled
    every epoch; a batch may span two epochs (so any number of blocks >= 1 works). ``start``
    skips that many batches (the data position of a resumed run) without building them."""
    gen = torch.Generator().manual_seed(seed)

    def order() -> Iterator[int]:
        while True:
            yield from torch.randperm(len(blocks), generator=gen).tolist()

    indices = order()
    next(itertools.islice(indices, start * batch_size, start * batch_size), None)  # itertools' "consume"
    while True:
        yield blocks[[next(indices) for _ in range(batch_size)]]


def heldout_sequences(docs: list[Document], tokenizer, seq_len: int, num_seqs: int) -> list[TokenSequence]:
    """Up to ``num_seqs`` held-out sequences of at most ``seq_len`` tokens, built as the probe
    builds them (short documents joined), so the held-out loss and the probes read the same text.

    Raises CondenseError when the held-out documents give no tokens.
    """
    sequences = [s for s in build_sequences(docs, tokenizer, seq_len, num_seqs) if len(s.input_ids) >= 2]
    if not sequences:
        raise CondenseError("the held-out documents give no sequence of 2+ tokens; use a larger corpus or --heldout")
    return sequences
