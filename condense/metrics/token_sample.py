"""A seeded sample of K counted tokens shared by all layers, and its isotropy measures.

The sample is the K counted tokens with the smallest keys, a keyed 64-bit hash of (seed, global
text index, position) (:func:`token_keys`). The hash values are independent uniform draws, so the
sample is uniform without replacement; it depends on nothing but the set of tokens seen, hence is
the same whatever the batch size, batch order, resume or sharding, and the same tokens at every
layer (keys do not depend on the layer). Nothing here imports transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from condense.metrics.isotropy import gauss_isoscore, gauss_mev_centred, gauss_twonn_id, sample_measures
from condense.metrics.streaming import FINE_BINS, HIST_BINS, QUANTILES, quantiles_from_counts

__all__ = [
    "SAMPLE_BUDGET_BYTES",
    "SAMPLE_CAP",
    "SAMPLE_COLUMNS",
    "sample_size_for_budget",
    "token_keys",
    "SampleCandidates",
    "TokenSampleAccumulator",
]

SAMPLE_BUDGET_BYTES = 256 * 2**20  # float32 vectors of every layer's sample together
SAMPLE_CAP = 4096  # beyond this the N^2 D finalize costs more than the estimates gain
SAMPLE_COLUMNS = (
    "isoscore", "gauss_isoscore", "mev_centred", "gauss_mev_centred", "twonn_id", "twonn_id_half", "twonn_id_quarter",
    "gauss_twonn_id", "sample_cross_mean_cos",
    *(f"sample_cross_cos_q{round(q * 100):02d}" for q in QUANTILES), "sample_tokens", "sample_texts",
)


def sample_size_for_budget(n_layers: int, dim: int, budget_bytes: int = SAMPLE_BUDGET_BYTES,
                           cap: int = SAMPLE_CAP) -> int:
    """The largest K with K * n_layers * dim * 4 bytes <= ``budget_bytes``, at most ``cap``."""
    if n_layers < 1 or dim < 1 or budget_bytes < 0 or cap < 0:
        raise ValueError(f"need n_layers >= 1, dim >= 1, budget_bytes >= 0, cap >= 0; got "
                         f"{n_layers}, {dim}, {budget_bytes}, {cap}")
    return min(cap, budget_bytes // (n_layers * dim * 4))


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    value &= 2**64 - 1
    return value - 2**64 if value >= 2**63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic on signed integers)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """One step of SplitMix64 (Steele et al. 2014): add the golden gamma, then the finaliser.

    int64 products and sums wrap around modulo 2^64 on every torch device, so the bit pattern is that
    of the uint64 reference.
    """
    z = z + _GAMMA
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def token_keys(seed: int, text_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2^63) of tokens (``text_index``, ``positions``), int64, broadcast shape, same device.

    key = f(f(f(seed) xor text) xor position) >> 1 with f one SplitMix64 step: chained bijections,
    so distinct tokens collide only by chance (2^-63 a pair). ``text_index`` and ``positions``
    (non-negative integers) broadcast against each other, e.g. [B, 1] and [B, T]. The result
    depends only on the integers, not on the platform or device.
    """
    text_index = torch.as_tensor(text_index, dtype=torch.int64)
    positions = torch.as_tensor(positions, dtype=torch.int64, device=text_index.device)
    start = _splitmix64(torch.tensor(_signed(seed), dtype=torch.int64, device=text_index.device))
    return _shift_right(_splitmix64(_splitmix64(start ^ text_index) ^ positions), 1)


def _order(keys: torch.Tensor, texts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Indices sorting by (key, text, position). Keys almost never tie, so one sort by key is a total
    order; if two do tie, stable sorts from the last criterion to the first decide."""
    order = torch.sort(keys).indices
    ordered = keys[order]
    if not bool((ordered[1:] == ordered[:-1]).any()):
        return order
    order = torch.sort(positions, stable=True).indices
    order = order[torch.sort(texts[order], stable=True).indices]
    return order[torch.sort(keys[order], stable=True).indices]


@dataclass
class SampleCandidates:
    """Tokens of one batch that :meth:`TokenSampleAccumulator.select` found able to enter a sample:
    keys, texts, positions [n] int64 and vectors [n, D] float32."""

    keys: torch.Tensor
    texts: torch.Tensor
    positions: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def empty(cls, dim: int) -> SampleCandidates:
        none = torch.zeros(0, dtype=torch.int64)
        return cls(none, none, none, torch.zeros(0, dim, dtype=torch.float32))


class TokenSampleAccumulator:
    """The ``k`` counted tokens of one layer with the smallest :func:`token_keys`, and their measures.

    ``update(hidden, mask, text_index, positions)``: hidden [B, T, D] (any float dtype, any device),
    mask [B, T] bool of the tokens the probe counts (padding False), text_index [B] int64 global text
    ids, positions [B, T] int64 positions in the text. Position 0 is left out when ``skip_first``
    (its state is the same in every text of a causal LM). Kept: ``keys``, ``texts``, ``positions``
    [n] int64 and :attr:`vectors` [n, D] float32, sorted by (key, text, position), n <= k, on the
    hidden states' device. The vectors stay in the rows of a buffer where they were written (``slots``
    names each one's row), so a batch costs O(new tokens x D), not a reordering of all k. A (text, position) pair must name one token: the same token fed twice is kept
    twice. Equal for any batching, order, resume (pickle) or :meth:`merge` of shards.
    """

    def __init__(self, k: int, dim: int, seed: int = 0, skip_first: bool = True) -> None:
        if k < 0 or dim < 1:
            raise ValueError(f"need k >= 0 and dim >= 1, got k={k}, dim={dim}")
        self.k, self.dim, self.seed, self.skip_first = k, dim, seed, skip_first
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.texts = torch.zeros(0, dtype=torch.int64)
        self.positions = torch.zeros(0, dtype=torch.int64)
        self.slots = torch.zeros(0, dtype=torch.int64)
        self.buffer = torch.zeros(0, dim, dtype=torch.float32)

    @property
    def vectors(self) -> torch.Tensor:
        """The kept vectors [n, D] float32, in the order of ``keys``."""
        return self.buffer[self.slots]

    def update(self, hidden: torch.Tensor, mask: torch.Tensor, text_index: torch.Tensor,
               positions: torch.Tensor, keys: torch.Tensor | None = None) -> None:
        """Fold one batch in: :meth:`add` of :meth:`select`."""
        self.add(self.select(hidden, mask, text_index, positions, keys))

    def select(self, hidden: torch.Tensor, mask: torch.Tensor, text_index: torch.Tensor,
               positions: torch.Tensor, keys: torch.Tensor | None = None) -> SampleCandidates:
        """The tokens of one batch that can still enter the sample, for :meth:`add`; the state is only
        read (a worker thread may select while another batch is added: a threshold read before that
        add is merely larger). ``keys`` [B, T]: ``token_keys(seed, text_index[:, None], positions)``
        if the caller has it already (it is the same for every layer)."""
        b, t = mask.shape
        if hidden.ndim != 3 or hidden.shape[:2] != (b, t) or hidden.shape[2] != self.dim:
            raise ValueError(f"hidden must be [B, T, {self.dim}] matching mask {tuple(mask.shape)}, "
                             f"got {tuple(hidden.shape)}")
        if tuple(text_index.shape) != (b,) or tuple(positions.shape) != (b, t):
            raise ValueError(f"text_index must be [{b}] and positions [{b}, {t}], got "
                             f"{tuple(text_index.shape)} and {tuple(positions.shape)}")
        kept = self.keys  # one snapshot: add() replaces the tensor, never changes it
        if self.k == 0:
            return SampleCandidates.empty(self.dim)
        text_index = text_index.to(device=mask.device, dtype=torch.int64)
        positions = positions.to(device=mask.device, dtype=torch.int64)
        counted = mask.bool() & (positions > 0) if self.skip_first else mask.bool()
        if keys is None:
            keys = token_keys(self.seed, text_index[:, None], positions)
        rows, cols = counted.nonzero(as_tuple=True)
        batch_keys = keys.to(mask.device)[rows, cols]
        # only tokens that can enter the k smallest are gathered: no copy of the whole batch
        if len(kept) == self.k:
            below = batch_keys <= kept[-1].to(batch_keys.device)
            rows, cols, batch_keys = rows[below], cols[below], batch_keys[below]
        if batch_keys.numel() > self.k:
            below = batch_keys <= torch.kthvalue(batch_keys, self.k).values
            rows, cols, batch_keys = rows[below], cols[below], batch_keys[below]
        if batch_keys.numel() == 0:
            return SampleCandidates.empty(self.dim)
        vectors = hidden[rows, cols].to(torch.float32)
        texts, token_positions = text_index[rows], positions[rows, cols]
        # a float64 row sum is finite exactly when the float32 row is (no overflow below 2^128 D);
        # several times faster than isfinite().all(dim=1) on the CPU
        bad = ~vectors.sum(dim=1, dtype=torch.float64).isfinite()
        if bool(bad.any()):
            at = int(bad.nonzero()[0, 0])
            raise ValueError(f"hidden state of text {int(texts[at])}, position {int(token_positions[at])} "
                             "is NaN or inf (or beyond float32): the token sample needs finite vectors")
        return SampleCandidates(batch_keys, texts, token_positions, vectors)

    def add(self, candidates: SampleCandidates) -> None:
        """Keep those of :meth:`select`'s ``candidates`` that are among the k smallest keys now."""
        if len(candidates.keys):
            self._keep(candidates.keys, candidates.texts, candidates.positions, candidates.vectors)

    def _keep(self, keys: torch.Tensor, texts: torch.Tensor, positions: torch.Tensor,
              vectors: torch.Tensor) -> None:
        """Join new tokens to the kept ones and keep the k first in (key, text, position) order; the
        new vectors that stay go to the buffer rows of those that left, or to new rows."""
        device = keys.device  # a resumed state sits on the CPU
        n_old = len(self.keys)
        self.slots, self.buffer = self.slots.to(device), self.buffer.to(device)
        order = _order(torch.cat([self.keys.to(device), keys]), torch.cat([self.texts.to(device), texts]),
                       torch.cat([self.positions.to(device), positions]))[: self.k]
        is_new = order >= n_old
        free = torch.ones(len(self.buffer), dtype=torch.bool, device=device)
        free[self.slots[order[~is_new]]] = False
        rows = free.nonzero().squeeze(1)
        needed = int(is_new.sum())
        if needed > len(rows):
            grown = needed - len(rows)
            rows = torch.cat([rows, torch.arange(len(self.buffer), len(self.buffer) + grown, device=device)])
            self.buffer = torch.cat([self.buffer, vectors.new_empty(grown, self.dim)])
        rows = rows[:needed]
        fresh = order[is_new] - n_old
        self.buffer[rows] = vectors[fresh]
        slots = torch.empty(len(order), dtype=torch.int64, device=device)
        slots[~is_new], slots[is_new] = self.slots[order[~is_new]], rows
        self.keys = torch.cat([self.keys.to(device), keys])[order]
        self.texts = torch.cat([self.texts.to(device), texts])[order]
        self.positions = torch.cat([self.positions.to(device), positions])[order]
        self.slots = slots

    def merge(self, other: TokenSampleAccumulator) -> None:
        """Fold in another shard's sample (same k, dim, seed, skip_first; disjoint tokens)."""
        mine = (self.k, self.dim, self.seed, self.skip_first)
        theirs = (other.k, other.dim, other.seed, other.skip_first)
        if mine != theirs:
            raise ValueError(f"cannot merge samples with (k, dim, seed, skip_first) {theirs} into {mine}")
        if len(other.keys):
            self._keep(other.keys, other.texts, other.positions, other.vectors)

    def __getstate__(self) -> dict:
        # compacted: the buffer's rows in key order, on the CPU
        kept = {name: getattr(self, name).cpu() for name in ("keys", "texts", "positions")}
        return {**self.__dict__, **kept, "buffer": self.vectors.cpu(), "slots": torch.arange(len(self.keys))}

    def finalize(self, pairs: list[torch.Tensor] | None = None) -> tuple[dict[str, float], np.ndarray]:
        """Columns :data:`SAMPLE_COLUMNS` and the density [HIST_BINS] of the cross-text cosines.

        On the CPU in float64: :func:`~condense.metrics.isotropy.sample_measures` of the kept vectors
        (TwoNN also on the n // 2 and n // 4 tokens with the smallest keys, ``twonn_id_half`` and
        ``twonn_id_quarter``), each beside its isotropic Gaussian value for the same (n, D). Cross-text
        cosines over unordered pairs of sampled tokens from different texts: exact mean, quantiles
        from 4096 bins, and the density normalised as :class:`~condense.metrics.streaming.LayerStats`'
        (counts / (total * bin width 2/128), integrating to 1 on [-1, 1]; zeros without pairs).
        The Gaussian baselines use seed 0 whatever the sample's seed, so runs stay comparable.
        NaN where the sample is too small (2 tokens for IsoScore, 3 for TwoNN, 2 texts for cosines).
        ``pairs``: :func:`~condense.metrics.isotropy.cross_pair_index` of :attr:`texts`, if the caller
        has it (every layer's sample holds the same tokens).
        """
        n = len(self.keys)
        measures, fine = sample_measures(self.vectors.cpu().double(), self.texts.cpu(), nested=(1, 2, 4),
                                         pairs=pairs)
        cols = {
            "isoscore": measures["isoscore"],
            "gauss_isoscore": gauss_isoscore(n, self.dim) if n >= 2 else math.nan,
            "mev_centred": measures["mev_centred"],
            "gauss_mev_centred": gauss_mev_centred(n, self.dim) if n >= 2 else math.nan,
            "twonn_id": measures["twonn_id_1"],
            "twonn_id_half": measures["twonn_id_2"],
            "twonn_id_quarter": measures["twonn_id_4"],
            "gauss_twonn_id": gauss_twonn_id(n, self.dim) if n >= 3 else math.nan,
            "sample_cross_mean_cos": measures["cross_mean_cos"],
        }
        for q, v in zip(QUANTILES, quantiles_from_counts(fine, -1.0, 1.0)):
            cols[f"sample_cross_cos_q{round(q * 100):02d}"] = v
        cols["sample_tokens"] = float(n)
        cols["sample_texts"] = float(torch.unique(self.texts).numel())
        coarse = fine.reshape(HIST_BINS, FINE_BINS // HIST_BINS).sum(axis=1)
        density = coarse / (coarse.sum() * (2.0 / HIST_BINS)) if coarse.sum() else np.zeros(HIST_BINS)
        return cols, density
