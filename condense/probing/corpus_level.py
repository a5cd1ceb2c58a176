"""The probe's corpus-level statistics: the exact cross-text cosine and the token sample shared by all layers.

Both compare tokens of *different* texts, which the per-text accumulators of
:mod:`condense.metrics.streaming` never do. They follow the same protocol as those: ``measure``
one batch of one layer without touching the state (a worker thread may run it, an out-of-memory
retry may drop it), then ``add`` once every layer of the batch was measured.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from condense.errors import CondenseError
from condense.metrics.cross_text import CrossTextAccumulator
from condense.metrics.isotropy import cross_pair_index
from condense.metrics.spectrum import WorkerPool
from condense.metrics.streaming import PAPER_NORM_FLOOR
from condense.metrics.token_sample import TokenSampleAccumulator, sample_size_for_budget

__all__ = ["CorpusLevel", "sample_size", "check_corpus_sample", "MIN_SAMPLE", "AUTO_CAP"]

MIN_SAMPLE = 16  # TwoNN on the quarter sample needs a few points with neighbours
# ``auto``'s K: the 256 MB budget, but at most 1024. The sample's statistics are computed at the end of
# the run, about K^2 D multiply-adds per layer: on SmolLM2-135M (31 layers, D 576, 2 CPU cores) 0.7 s
# for all layers at K = 1024 since 0e2e0c8 (before it, one layer after another: 2 s at 1024, 10 s at
# 2048, 20-24 s at the budget's 3758), against a probe whose target is 1.10x the bare forward pass
AUTO_CAP = 1024
# the layers' end-of-run statistics run in parallel, each holding a few K x K float64 arrays
PARALLEL_FINALIZE_BYTES = 1 << 30


def check_corpus_sample(value: Any) -> None:
    """CondenseError unless ``value`` is ``"auto"``, 0 (off) or an integer >= MIN_SAMPLE."""
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or (value != 0 and value < MIN_SAMPLE):
        raise CondenseError(f"bad --corpus-sample {value!r}: give a number of tokens >= {MIN_SAMPLE}, "
                            f"0 to turn the sample off, or auto (a 256 MB budget, at most {AUTO_CAP})")


def sample_size(setting: int | str, n_layers: int, dim: int) -> int:
    """K for ``--corpus-sample`` ``setting``: the integer given, or ``auto``'s K from the memory budget
    (K x layers x D x 4 bytes <= 256 MB) and at most :data:`AUTO_CAP` (the end-of-run cost, see there)."""
    return sample_size_for_budget(n_layers, dim, cap=AUTO_CAP) if setting == "auto" else int(setting)


class CorpusLevel:
    """Cross-text cosine sums and (when K > 0) the token sample, for every probed layer.

    ``paper``: count the paper's tokens (every attended token from ``start_at``, norms floored at
    1e-3) instead of the pooled mask's. Pickles into the probe's checkpoint.
    """

    def __init__(self, layers: list[int], dim: int, k: int, seed: int, paper: bool, start_at: int) -> None:
        self.k, self.dim, self.seed, self.paper, self.start_at = k, dim, seed, paper, start_at
        self.cross = {i: CrossTextAccumulator() for i in layers}
        self.sample = {i: TokenSampleAccumulator(k, dim, seed=seed) for i in layers} if k else {}
        self.finalize_seconds = 0.0  # the sample's end-of-run wall time, all layers (run.json)
        self._pending: dict[int, Future] = {}
        self._started = 0.0  # when start_samples began: finalize_seconds runs to the last layer's end

    def counted(self, mask: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The tokens this convention counts [B, T]: the pooled mask, or the paper's attended tokens."""
        if not self.paper:
            return mask
        counted = attention.clone()
        counted[:, : self.start_at] = False
        return counted

    def measure(self, i: int, hidden: torch.Tensor, unit: torch.Tensor, norms: torch.Tensor, mask: torch.Tensor,
                attention: torch.Tensor, positions: torch.Tensor, offset: int) -> dict:
        """One batch of layer ``i``: its cross-text sums and its sample candidates (kept by :meth:`add`).

        hidden [B, T, D] in the geometry dtype; ``unit`` the pooled unit rows (zero where ``mask`` is
        False); ``norms`` [B, T]; ``offset`` the global index of the batch's first text, so a text
        keeps its index whatever the batch size, and across a resume.
        """
        counted = self.counted(mask, attention)
        if self.paper:
            unit = hidden * (counted / norms.clamp_min(PAPER_NORM_FLOOR)).unsqueeze(-1)
        part = {"cross": self.cross[i].measure(unit, counted)}
        if self.k:
            texts = torch.arange(offset, offset + hidden.shape[0], dtype=torch.int64, device=hidden.device)
            part["sample"] = self.sample[i].select(hidden, counted, texts, positions)
        return part

    def add(self, i: int, part: dict) -> None:
        self.cross[i].add(part["cross"])
        if self.k:
            self.sample[i].add(part["sample"])

    def start_samples(self, pool: WorkerPool) -> None:
        """Start every layer's sample statistics on ``pool``'s threads (one torch thread each, where
        they run about twice as fast as on two, and as many layers at once as the pool has threads
        and :data:`PARALLEL_FINALIZE_BYTES` allows); :meth:`finalize` collects them. Once the run is over."""
        if not self.k or self._pending:
            return
        self._started = time.perf_counter()
        texts = next(iter(self.sample.values())).texts.cpu()
        # every layer keeps the same tokens (the keys do not depend on the layer): one pair index for all
        pairs = cross_pair_index(texts)
        slots = threading.BoundedSemaphore(max(1, min(pool.workers, PARALLEL_FINALIZE_BYTES // (4 * 8 * self.k ** 2))))

        def job(sample):
            with slots:
                result = sample.finalize(pairs if torch.equal(sample.texts.cpu(), texts) else None)
            return result, time.perf_counter()  # the caller turns the end into finalize_seconds

        self._pending = {i: pool.executor.submit(job, sample) for i, sample in self.sample.items()}

    def finalize(self, i: int, within_mean_cos: float) -> tuple[dict[str, float], np.ndarray | None]:
        """Layer ``i``'s columns, and the sampled cross-text cosine density (None without a sample).
        The sample's part comes from :meth:`start_samples` if it ran, else is computed here."""
        cols = self.cross[i].finalize(within_mean_cos)
        if not self.k:
            return cols, None
        if i in self._pending:
            (sampled, density), end = self._pending.pop(i).result()
            self.finalize_seconds = max(self.finalize_seconds, end - self._started)
        else:
            start = time.perf_counter()
            sampled, density = self.sample[i].finalize()
            self.finalize_seconds += time.perf_counter() - start
        return {**cols, **sampled}, density

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pending": {}}  # futures of the end of a run are not state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_pending": {}, "_started": 0.0, **state})

    def record(self, columns: dict[str, float] | None) -> dict[str, Any]:
        """What run.json records of the sample (``columns``: any layer's, they share the tokens)."""
        if not self.k:
            return {"k": 0}
        tokens, texts = ((math.nan, math.nan) if columns is None else
                         (columns.get("sample_tokens", math.nan), columns.get("sample_texts", math.nan)))
        return {"k": self.k, "tokens": _int(tokens), "texts": _int(texts), "seed": self.seed,
                "position_0": "left out", "finalize_seconds": round(self.finalize_seconds, 3)}


def _int(value: float) -> int | None:
    return None if value is None or not math.isfinite(value) else int(value)
