"""Corpus presets read from the Hugging Face hub with ``datasets``: the paper's four corpora.

Each preset is one split of one dataset and the field the authors' script reads from it
(``key_observations/utils/text_data.py``: WikiText-103 ``text``, PubMedQA ``long_answer``, IMDB
``text``, SQuAD ``context``). The sequential sampler streams the split (:func:`hub_records`); the
paper's sampler needs its length and random access, so it loads the split whole
(:func:`hub_rows`; ``datasets`` keeps it in its cache, about 0.5 GB for WikiText-103's train split).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from condense import hub
from condense.errors import CondenseError

__all__ = ["HUB_PRESETS", "hub_records", "hub_rows", "HubRows"]

# preset -> (dataset path, config, split, text field)
HUB_PRESETS: dict[str, tuple[str, str | None, str, str]] = {
    "wikipedia": ("Salesforce/wikitext", "wikitext-103-v1", "train", "text"),
    "pubmed": ("qiaojin/PubMedQA", "pqa_labeled", "train", "long_answer"),
    "imdb": ("stanfordnlp/imdb", None, "train", "text"),
    "squad": ("rajpurkar/squad", None, "train", "context"),
}
_INSTEAD = "use --corpus builtin or a local .txt/.jsonl file"


class HubRows(Sequence[str]):
    """The text field of every row of a loaded split, read one row at a time (a column of
    WikiText-103 as Python strings would take gigabytes)."""

    def __init__(self, dataset: Any, field: str):
        self._dataset, self._field = dataset, field

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, i):  # an int or a slice, as Sequence allows
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return str(self._dataset[i][self._field])


def hub_records(preset: str, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[int, str]]:
    """(row index, text) of every row of the preset's split, streamed in order (or through a
    10,000-row shuffle buffer seeded by ``seed``); offline, read from the copy in the ``datasets``
    cache that :func:`hub_rows` left (streams are not cached). The first row is read at once, so a
    missing dataset or an unreachable hub fails here, as one CondenseError line."""
    path, config, split, field = HUB_PRESETS[preset]
    with _reading(preset) as datasets:
        ds = datasets.load_dataset(path, config, split=split, streaming=not datasets.config.HF_HUB_OFFLINE)
        if shuffle:
            ds = ds.shuffle(seed=seed, **({"buffer_size": 10_000} if isinstance(ds, datasets.IterableDataset) else {}))
        rows = iter(ds)  # one iterator throughout: a streaming dataset iterated again starts over
        first = next(rows, None)

    def records() -> Iterator[tuple[int, str]]:
        if first is None:
            return
        for i, record in enumerate(itertools.chain([first], rows)):
            yield i, str(record[field])

    return records()


def hub_rows(preset: str) -> HubRows:
    """Every row of the preset's split (downloaded whole, or read from the ``datasets`` cache)."""
    path, config, split, field = HUB_PRESETS[preset]
    with _reading(preset) as datasets:
        return HubRows(datasets.load_dataset(path, config, split=split), field)


@contextlib.contextmanager
def _reading(preset: str):
    """``datasets``, quiet, with every failure as one line naming the preset."""
    path = HUB_PRESETS[preset][0]
    try:
        import datasets
    except ImportError:
        raise CondenseError(f"corpus preset {preset!r} needs `pip install datasets` (or use --corpus builtin)") from None
    if not datasets.config.HF_HUB_OFFLINE and not hub.reachable():  # else datasets retries for a minute
        raise CondenseError(f"cannot read corpus preset {preset!r}: the hub at {hub.endpoint()} does not answer "
                            "(check HF_ENDPOINT, the network or a proxy); with HF_HUB_OFFLINE=1 a copy in the "
                            f"datasets cache is used; {_INSTEAD}")
    what = f"dataset {path!r}"
    bars_off = datasets.utils.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        with hub.hub_calls(what, datasets.config.HF_DATASETS_CACHE):
            yield datasets
    except CondenseError as err:
        raise CondenseError(f"cannot read corpus preset {preset!r}: {err}; {_INSTEAD}") from None
    except Exception as err:  # noqa: BLE001  (datasets raises many types: files, configs, the network)
        raise CondenseError(f"cannot read corpus preset {preset!r} ({path}) from the Hugging Face hub "
                            f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); {_INSTEAD}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_off:
            datasets.enable_progress_bars()
