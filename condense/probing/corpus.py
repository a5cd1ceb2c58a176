"""Documents from a corpus spec, and the token sequences the probe feeds to the model.

A corpus spec is ``builtin`` (offline prose from the standard library's pydoc topics), a local
``.txt`` (documents separated by blank lines), ``.jsonl`` (one JSON object a line), a folder of
``.txt`` files, or a hub preset (``wikipedia``, ``pubmed``, ``imdb``, ``squad``; see
:mod:`.hub_corpus`). Texts already in memory (a list of strings, a ``datasets.Dataset`` and its
text column) become a :class:`TextCorpus`, identified by its size and a content hash.

A corpus is a list of rows (records): :func:`read_documents` yields its non-empty ones in order
for the sequential sampler, :func:`read_rows` gives all of them, empty ones included, with random
access, for the paper's sampler (:mod:`.sampling`). A document's ``row`` is its index there.
"""

from __future__ import annotations

import hashlib
import json
import random
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.probing.hub_corpus import HUB_PRESETS, hub_records, hub_rows

__all__ = ["Document", "TokenSequence", "TextCorpus", "HUB_PRESETS", "read_documents", "read_rows", "texts_corpus",
           "is_corpus_spec", "texts_hash", "build_sequences", "encode", "token_hash"]

_SPEC_HELP = "use builtin, a .txt/.jsonl file, a folder of .txt files, or one of " + ", ".join(HUB_PRESETS)


@dataclass(frozen=True)
class Document:
    """One document: ``name`` says where it came from (file and line, topic, record index);
    ``row`` is its index among the corpus's rows (:func:`read_rows`), None where unknown."""

    name: str
    text: str
    row: int | None = None


@dataclass(frozen=True)
class TokenSequence:
    """One model input: token ids, which of them are special tokens, its source documents, and
    the corpus row it starts at (None where unknown)."""

    input_ids: list[int]
    special: list[bool]
    documents: tuple[str, ...]
    start_row: int | None = None


@dataclass(frozen=True)
class TextCorpus:
    """Texts handed over in memory.

    documents: the non-empty texts as Documents named ``texts[i]`` (``i``: index in the input).
    label: what run.json's ``settings.corpus`` says, ``texts:<n>:sha256=<first 16 hex digits>``.
    record: run.json's ``corpus_texts``: kind (``list`` or ``datasets.Dataset``), count, the full
        SHA-256 of :func:`texts_hash`, and for a Dataset its column, rows and description.
    rows: every text as given, empty ones included (the rows of the paper's sampler).
    """

    documents: list[Document]
    label: str
    record: dict[str, Any] = field(default_factory=dict)
    rows: list[str] = field(default_factory=list)


def is_corpus_spec(corpus: Any) -> bool:
    """Whether ``corpus`` names a corpus (a string or a path) rather than holding texts."""
    return isinstance(corpus, (str, os.PathLike))


def texts_hash(texts: Iterable[str]) -> str:
    """SHA-256 of the texts in order, each UTF-8 encoded and prefixed by its byte length (so
    ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def texts_corpus(corpus: Any, text_field: str = "text", shuffle: bool = False, seed: int = 0) -> TextCorpus:
    """A :class:`TextCorpus` from texts in memory: a list (or any iterable) of strings, a
    ``datasets.Dataset`` (its ``text_field`` column) or one of its columns.

    Empty texts are skipped, as in files; the hash covers every text as given, in the given
    order (``shuffle`` by ``seed`` then reorders the documents). CondenseError for an empty
    collection, a non-string item, a missing column, or texts that are all empty.
    """
    record: dict[str, Any] = {"kind": "list"}
    if _is_dataset(corpus):
        if text_field not in corpus.column_names:
            raise CondenseError(f"the Dataset has no column {text_field!r} (it has: {', '.join(corpus.column_names)}); "
                                "choose one with text_field=")
        info = corpus.info
        record = {"kind": "datasets.Dataset", "column": text_field, "rows": corpus.num_rows,
                  "dataset": {k: getattr(info, k, None) for k in ("dataset_name", "config_name")}
                  | {"split": str(corpus.split) if corpus.split is not None else None}}
        corpus = corpus[text_field]
    try:
        texts = list(corpus)
    except TypeError:
        raise CondenseError(f"corpus of type {type(corpus).__name__} is neither a corpus name nor a collection of "
                            f"texts; {_SPEC_HELP}, or pass a list of strings or a datasets.Dataset") from None
    if not texts:
        raise CondenseError("the corpus is an empty collection of texts; pass at least one non-empty string")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise CondenseError(f"text {bad} of the corpus is a {type(texts[bad]).__name__}, not a string; pass a list of strings")
    docs = [Document(f"texts[{i}]", t.strip(), i) for i, t in enumerate(texts) if t.strip()]
    if not docs:
        raise CondenseError(f"the corpus's {len(texts)} texts are all empty; pass at least one non-empty string")
    digest = texts_hash(texts)
    if shuffle:
        random.Random(seed).shuffle(docs)
    return TextCorpus(docs, f"texts:{len(texts)}:sha256={digest[:16]}",
                      {**record, "count": len(texts), "non_empty": len(docs), "sha256": digest}, texts)


def _is_dataset(obj: Any) -> bool:
    datasets = sys.modules.get("datasets")  # a Dataset can only exist once datasets is imported
    return datasets is not None and isinstance(obj, datasets.Dataset)


def read_documents(spec: str, text_field: str = "text", shuffle: bool = False, seed: int = 0) -> Iterator[Document]:
    """Documents of the corpus ``spec``, non-empty ones only, in order (or shuffled by ``seed``).

    Local corpora are read and validated eagerly, so a bad file fails before any model loads.
    Raises CondenseError for an unknown spec, an empty corpus, or a malformed file.
    """
    if spec in HUB_PRESETS:
        return (Document(f"{spec}[{i}]", text.strip(), None if shuffle else i)
                for i, text in hub_records(spec, shuffle, seed) if text.strip())
    docs = [Document(d.name, d.text.strip(), d.row) for d in _local_rows(spec, text_field) if d.text.strip()]
    if not docs:
        raise CondenseError(f"corpus {spec!r} has no usable text (every document is empty)")
    if shuffle:
        random.Random(seed).shuffle(docs)
    return iter(docs)


def read_rows(spec: str, text_field: str = "text") -> tuple[Sequence[str], str]:
    """(every row's text, empty rows included, with random access; a label for row names).

    Hub presets are downloaded whole (``datasets`` caches them); local corpora are read as for
    :func:`read_documents`: a .txt file's blank-line separated documents, a .jsonl file's records,
    the builtin topics. Raises CondenseError as :func:`read_documents` does.
    """
    if spec in HUB_PRESETS:
        return hub_rows(spec), spec
    rows = _local_rows(spec, text_field)
    if not any(d.text.strip() for d in rows):
        raise CondenseError(f"corpus {spec!r} has no usable text (every document is empty)")
    return [d.text for d in rows], Path(spec).name or spec


def _local_rows(spec: str, text_field: str) -> list[Document]:
    """Every row of a local corpus as a Document (a .jsonl record's text unstripped, maybe empty)."""
    if spec == "builtin":
        docs = _builtin_documents()
    else:
        path = Path(spec)
        if path.is_dir():
            docs = [d for f in sorted(path.glob("*.txt")) for d in _txt_documents(f)]
            if not docs:
                raise CondenseError(f"corpus folder {spec!r} holds no non-empty .txt file; {_SPEC_HELP}")
        elif path.is_file() and path.suffix == ".jsonl":
            docs = _jsonl_documents(path, text_field)
        elif path.is_file() and path.suffix == ".txt":
            docs = _txt_documents(path)
        elif path.exists():
            raise CondenseError(f"unsupported corpus file {spec!r}: {_SPEC_HELP}")
        else:
            raise CondenseError(f"unknown corpus {spec!r}: no such file or folder; {_SPEC_HELP}")
    return [Document(d.name, d.text, i) for i, d in enumerate(docs)]


def _builtin_documents() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document(f"pydoc:{key}", text.strip()) for key, text in topics.items() if text.strip()]


def _txt_documents(path: Path) -> list[Document]:
    text = _read_text(path)
    chunks = re.split(r"\n\s*\n", text)
    return [Document(f"{path.name}#{i + 1}", c.strip()) for i, c in enumerate(chunks) if c.strip()]


def _jsonl_documents(path: Path, field: str) -> list[Document]:
    """One Document per record (blank lines are no record), its text as it is, possibly empty."""
    docs = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CondenseError(f"line {n} of {path} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or field not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise CondenseError(
                f"line {n} of {path} has no field {field!r} (it has: {keys}); choose one with --text-field"
            )
        docs.append(Document(f"{path.name}:{n}", str(record[field])))
    return docs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CondenseError(f"corpus file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CondenseError(f"cannot read corpus file {path}: {err.strerror}") from None


def build_sequences(
    documents: Iterable[Document], tokenizer, max_length: int, num_seqs: int, add_special_tokens: bool = True
) -> list[TokenSequence]:
    """Up to ``num_seqs`` sequences of the first ``max_length`` tokens of each document.

    A document shorter than ``max_length`` tokens is joined (with a blank line) to the following
    ones until the text is long enough, as the paper's sampler does; the last sequence may be
    shorter when the corpus runs out. Tokenised with the tokenizer's default special tokens.
    """
    sequences: list[TokenSequence] = []
    docs: list[Document] = []
    count = 0
    for doc in documents:
        docs.append(doc)
        count += len(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if count >= max_length:
            sequences.append(_joined(tokenizer, docs, max_length, add_special_tokens))
            docs, count = [], 0
            if len(sequences) == num_seqs:
                return sequences
    if docs:
        sequences.append(_joined(tokenizer, docs, max_length, add_special_tokens))
    return [s for s in sequences if s.input_ids]


def _joined(tokenizer, docs: list[Document], max_length: int, add_special: bool) -> TokenSequence:
    text = "\n\n".join(d.text for d in docs)
    return encode(tokenizer, text, tuple(d.name for d in docs), docs[0].row, max_length, add_special)


def encode(tokenizer, text: str, names: tuple[str, ...], start_row: int | None, max_length: int,
           add_special: bool = True) -> TokenSequence:
    """``text`` tokenised as the model sees it: truncated to ``max_length`` tokens, with the
    tokenizer's special tokens when ``add_special``."""
    enc = tokenizer(text, add_special_tokens=add_special, truncation=True, max_length=max_length,
                    return_special_tokens_mask=True)
    return TokenSequence(list(enc["input_ids"]), [bool(s) for s in enc["special_tokens_mask"]], names, start_row)


def token_hash(sequences: Iterable[TokenSequence]) -> str:
    """SHA-256 of the token ids of all sequences (in order): identifies the exact model input."""
    h = hashlib.sha256()
    for seq in sequences:
        h.update(json.dumps(seq.input_ids).encode())
    return h.hexdigest()
