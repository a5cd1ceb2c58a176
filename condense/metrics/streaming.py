"""Streaming per-layer accumulators: ``update()`` batch by batch, then ``finalize()``.

Each accumulator keeps O(bins) state (plus O(S^2) for the paper convention and one scalar pair
per sequence for the bootstrap); hidden states and S x S matrices of past batches are dropped.
Geometry runs in float32 (or float64 if asked) on the hidden states' own device.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from condense.metrics.geometry import MASSIVE_FACTOR, NORM_FLOOR, cone_log10_sphere_fraction
from condense.metrics.spectrum import (SPECTRAL_KEYS, gram_of_rows, spectrum_from_gram, spectrum_of_products,
                                       spectrum_of_rows, worker_pool)

__all__ = [
    "HIST_BINS",
    "FINE_BINS",
    "ANGLE_BINS",
    "QUANTILES",
    "LayerStats",
    "PooledCosineAccumulator",
    "PaperCosineAccumulator",
    "TokenGeometryAccumulator",
    "quantiles_from_counts",
    "upper_pair_sums",
    "fine_histogram",
    "PAIR_BLOCK",
    "PAPER_NORM_FLOOR",
]

HIST_BINS = 128  # the paper's heatmap resolution on [-1, 1]
FINE_BINS = 128 * 32  # quantiles are read from these: error <= 2 / 4096 ~ 4.9e-4
ANGLE_BINS = 3600  # 0.05-degree bins on [0, 180] for half-angle quantiles
QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
PAPER_NORM_FLOOR = 1e-3
PAIR_BLOCK = 64  # rows per strip of the pair products: ~(1 + 64/S)/2 of the S x S matrix is formed


@dataclass
class LayerStats:
    """Finalised statistics of one layer: scalar columns plus the 128-bin cosine density."""

    columns: dict[str, float]
    density: np.ndarray
    seq_pair_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seq_pair_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))


def quantiles_from_counts(counts: np.ndarray, lo: float, hi: float, qs=QUANTILES) -> list[float]:
    """Quantiles of a histogram on [lo, hi], interpolating linearly inside the bin.

    The error is at most one bin width when values are spread arbitrarily inside a bin.
    """
    total = counts.sum()
    if total <= 0:
        return [math.nan] * len(qs)
    edges = np.linspace(lo, hi, len(counts) + 1)
    cdf = np.concatenate([[0.0], np.cumsum(counts)]) / total
    return [float(np.interp(q, cdf, edges)) for q in qs]


@functools.lru_cache(maxsize=4)
def _bin_of_zero(device: torch.device) -> torch.Tensor:
    """One-hot [FINE_BINS] float64 of the histogram bin that holds the value 0 (padding's cosine)."""
    return fine_histogram(torch.zeros(1, device=device))


def _cosine_columns(
    fine: np.ndarray, n: float, total: float, total_sq: float, angle_sum: float
) -> tuple[dict[str, float], np.ndarray]:
    mean = total / n if n else math.nan
    var = max(total_sq / n - mean * mean, 0.0) if n else math.nan
    cols = {"mean_cos": mean, "std_cos": math.sqrt(var)}
    for q, v in zip(QUANTILES, quantiles_from_counts(fine, -1.0, 1.0)):
        cols[f"q{round(q * 100):02d}_cos"] = v
    cols["mean_pair_angle_deg"] = angle_sum / n if n else math.nan
    coarse = fine.reshape(HIST_BINS, -1).sum(axis=1)
    density = coarse / (coarse.sum() * (2.0 / HIST_BINS)) if n else np.zeros(HIST_BINS)
    return cols, density


class PooledCosineAccumulator:
    """Cosine similarity of every within-sequence pair (i < j, valid tokens), pooled over sequences.

    ``update(unit, mask)``: unit [B, S, D] rows already scaled to unit norm and zeroed where
    ``mask`` [B, S] is False. Each unordered pair counts once, so the diagonal and padding never
    enter. Mean, std and the mean pair angle are exact; quantiles come from a 4096-bin histogram.
    ``update`` is ``add(measure(unit, mask))``: ``measure`` returns one batch's sums without
    touching the state, so a caller can drop a batch that failed half-way (out of memory).
    """

    def __init__(self) -> None:
        # device-side sums: one host sync per layer at finalize, not several per batch
        self.state: dict[str, torch.Tensor] = {}
        self.seq_sums: list[torch.Tensor] = []
        self.seq_counts: list[torch.Tensor] = []

    def update(self, unit: torch.Tensor, mask: torch.Tensor) -> None:
        self.add(self.measure(unit, mask))

    @staticmethod
    def measure(unit: torch.Tensor, mask: torch.Tensor, keep: int = 0) -> dict[str, torch.Tensor]:
        """One batch's pair sums: ``fine`` histogram, ``n``, ``total``, ``total_sq``, ``angle_sum``
        (degrees) and per-sequence ``seq_sums``/``seq_counts`` (for the bootstrap); with ``keep``,
        also ``upper``, the pair products of the first ``keep`` rows (see :func:`upper_pair_sums`)."""
        counts = mask.sum(dim=1).double()
        pairs = counts * (counts - 1) / 2
        sums = upper_pair_sums(unit, keep=keep)
        # padded (zeroed) rows give pairs of cosine exactly 0: out of the zero bin and the angle sum
        width = unit.shape[1]
        n_zero = unit.shape[0] * width * (width - 1) / 2 - pairs.sum()
        fine = sums["fine"] - n_zero * _bin_of_zero(unit.device)
        angle_sum = torch.rad2deg(sums["angle_sum"] - n_zero * (math.pi / 2))
        # per sequence, sum_{i<j} u_i.u_j = (|sum_i u_i|^2 - sum_i |u_i|^2) / 2, in float64
        resultant = unit.sum(dim=1).double().square().sum(dim=-1)
        seq_sums = (resultant - unit.square().sum(dim=(1, 2)).double()) / 2
        batch = {"fine": fine, "n": pairs.sum(), "total": seq_sums.sum(), "total_sq": sums["total_sq"],
                 "angle_sum": angle_sum, "seq_sums": seq_sums, "seq_counts": pairs}
        if keep:
            batch["upper"] = sums["upper"]
        return batch

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Fold a batch's sums from :meth:`measure` into the state."""
        _add(self.state, **{k: v for k, v in batch.items() if k not in ("seq_sums", "seq_counts", "upper")})
        _append_joined(self.seq_sums, batch["seq_sums"])
        _append_joined(self.seq_counts, batch["seq_counts"])

    def finalize(self) -> LayerStats:
        st = {k: v.cpu().numpy() for k, v in self.state.items()}
        n = float(st.get("n", 0.0))
        cols, density = _cosine_columns(st.get("fine", np.zeros(FINE_BINS)), n, float(st.get("total", 0.0)),
                                        float(st.get("total_sq", 0.0)), float(st.get("angle_sum", 0.0)))
        cols["n_pairs"] = n
        sums = torch.cat(self.seq_sums).cpu().numpy() if self.seq_sums else np.zeros(0)
        pair_counts = torch.cat(self.seq_counts).cpu().numpy() if self.seq_counts else np.zeros(0)
        return LayerStats(cols, density, sums, pair_counts)

    def __getstate__(self) -> dict:
        # one tensor per list in a checkpoint, not one per batch
        return {**self.__dict__, "seq_sums": _joined(self.seq_sums), "seq_counts": _joined(self.seq_counts)}


def upper_pair_sums(unit: torch.Tensor, block: int = PAIR_BLOCK, keep: int = 0) -> dict[str, torch.Tensor]:
    """Sums over the strict upper triangle (i < j) of each ``unit @ unit^T`` [B, S, S], clipped to [-1, 1].

    unit: [B, S, D]. Returns float64 ``fine`` ([FINE_BINS] histogram on [-1, 1]), ``total_sq``
    (sum of c_ij^2) and ``angle_sum`` (sum of arccos c_ij, radians). Computed in row strips
    ``[lo, lo + block) x [lo, S)`` whose diagonal block's lower triangle and diagonal are set to 0
    and then taken out of the sums again, so about half of the S x S products are formed. With
    ``keep`` > 0, also ``upper`` [keep, S, S]: the unclipped products of the first ``keep`` rows
    on and above the diagonal (zeros below), for a spectrum that would otherwise recompute them.
    """
    b, s, _ = unit.shape
    columns = unit.transpose(1, 2)
    fine = torch.zeros(FINE_BINS, dtype=torch.float64, device=unit.device)
    total_sq = torch.zeros((), dtype=torch.float64, device=unit.device)
    angle_sum = torch.zeros((), dtype=torch.float64, device=unit.device)
    upper = torch.zeros(keep, s, s, dtype=unit.dtype, device=unit.device) if keep else None
    n_blanked = 0
    for lo in range(0, s, block):
        hi = min(lo + block, s)
        strip = torch.bmm(unit[:, lo:hi], columns[:, :, lo:])
        if keep:
            upper[:, lo:hi, lo:] = strip[:keep]
        strip.clamp_(-1.0, 1.0)[:, :, : hi - lo].masked_fill_(_lower_with_diagonal(hi - lo, unit.device), 0.0)
        n_blanked += b * (hi - lo) * (hi - lo + 1) // 2
        fine += fine_histogram(strip)
        total_sq += torch.linalg.vector_norm(strip).double() ** 2
        angle_sum += torch.arccos(strip).sum().double()
    sums = {"fine": fine - n_blanked * _bin_of_zero(unit.device), "total_sq": total_sq,
            "angle_sum": angle_sum - n_blanked * (math.pi / 2)}
    if keep:
        sums["upper"] = upper.triu_()
    return sums


def fine_histogram(values: torch.Tensor) -> torch.Tensor:
    """Counts of ``values`` (within [-1, 1]) in FINE_BINS equal bins on [-1, 1], float64 [FINE_BINS].

    The bins of ``torch.histc(values, FINE_BINS, -1, 1)`` (1 lands in the last bin), counted with
    ``bincount`` on the bin indices, which is several times faster on the CPU than ``histc``.
    """
    index = values.add(1.0).mul_(FINE_BINS / 2).to(torch.int32).clamp_(0, FINE_BINS - 1)
    return torch.bincount(index.view(-1), minlength=FINE_BINS).double()


_JOIN_EVERY = 32


@functools.lru_cache(maxsize=16)
def _lower_with_diagonal(size: int, device: torch.device) -> torch.Tensor:
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def _append_joined(parts: list[torch.Tensor], value: torch.Tensor) -> None:
    """Append a batch's per-sequence values, joining the list into one tensor every ``_JOIN_EVERY``.

    Thousands of tiny tensors kept alive for a whole run each pin a page of the heap between the
    forward pass's large temporaries: measured on all-MiniLM-L6 at 512 tokens a batch, the resident
    set grew by 0.18 MiB a batch without joining, and stayed flat with it.
    """
    parts.append(value)
    if len(parts) >= _JOIN_EVERY:
        parts[:] = [torch.cat([p.to(value.device) for p in parts])]  # a resumed state may sit on the CPU


def _joined(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.cat([p.cpu() for p in parts])] if len(parts) > 1 else list(parts)


class PaperCosineAccumulator:
    """The paper's convention: S x S cosine matrices averaged element-wise across sequences.

    ``update(hidden, mask)``: hidden [B, S, D] in the geometry dtype, mask [B, S] (padding only;
    the paper keeps special tokens). Norms are floored at 1e-3, values clipped to [-1, 1], the
    diagonal kept. State is one [S, S] float64 sum (and a count matrix when ``ragged`` allows
    sequences of unequal length, averaging each entry over the sequences that have it).
    Summaries (histogram, mean, std, quantiles) are taken over all S^2 entries of the average.
    """

    def __init__(self, seq_len: int, ragged: bool = False) -> None:
        self.seq_len = seq_len
        self.ragged = ragged
        self.sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def update(self, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        self.add(self.measure(hidden, mask))

    def measure(self, hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch's [S, S] float64 sums of cosines and of pair counts (the state is untouched)."""
        s = self.seq_len
        hidden, mask = hidden[:, :s], mask[:, :s]
        if hidden.shape[1] < s:
            pad = s - hidden.shape[1]
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad))
        if not self.ragged and not bool(mask.all()):
            raise ValueError("paper aggregation needs every sequence to have exactly S tokens")
        unit = hidden / hidden.norm(dim=-1, keepdim=True).clamp_min(PAPER_NORM_FLOOR)
        unit = unit * mask.unsqueeze(-1)
        gram = torch.bmm(unit, unit.transpose(1, 2)).clamp(-1.0, 1.0).double().sum(dim=0)
        return {"sum": gram, "count": (mask.unsqueeze(2) & mask.unsqueeze(1)).double().sum(dim=0)}

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Fold a batch's sums from :meth:`measure` into the state."""
        gram, pairs = batch["sum"], batch["count"]
        # .to(): a resumed checkpoint holds its sums on the CPU
        self.sum = gram if self.sum is None else self.sum.to(gram.device) + gram
        self.count = pairs if self.count is None else self.count.to(pairs.device) + pairs

    def averaged_matrix(self) -> torch.Tensor:
        """The element-wise mean [S, S] (NaN where no sequence had the pair)."""
        if self.sum is None:
            raise ValueError("no sequences were added")
        return self.sum / self.count.where(self.count > 0, torch.nan)

    def finalize(self) -> LayerStats:
        m = self.averaged_matrix()
        vals = m[~m.isnan()].clamp(-1.0, 1.0)
        fine = fine_histogram(vals.float()).cpu().numpy()
        angle = float(torch.rad2deg(torch.arccos(vals)).sum())
        cols, density = _cosine_columns(
            fine, vals.numel(), float(vals.sum()), float(vals.square().sum()), angle
        )
        cols["n_pairs"] = float(vals.numel())
        return LayerStats(cols, density)


class TokenGeometryAccumulator:
    """Cone half-angle, token norms, massive activations, RMS-scaled cosine and spectrum.

    ``update(hidden, mask, positions)``: hidden [B, S, D] (geometry dtype, already centred if
    asked), mask [B, S] of tokens that count, positions [B, S] of their indices in the sequence.
    Half-angles are pooled over tokens (exact mean and max, p95 from 0.05-degree bins);
    per-sequence quantities (norm max/median, MEV, entropy, effective rank, HF/LF ratio, RMS-scaled
    mean cosine) are averaged over sequences. The spectrum (one eigendecomposition and a short
    Lanczos iteration per sequence, in the hidden states' dtype, see :mod:`condense.metrics.spectrum`)
    is computed for the first ``spectrum_seqs`` only. ``update`` is ``add(measure(...))``.
    """

    PER_SEQUENCE = ("norm_max_over_median", "mean_cos_dim_scaled")

    def __init__(self, dim: int, spectrum_seqs: int = 8) -> None:
        self.dim = dim
        self.spectrum_seqs = spectrum_seqs
        self.n_seqs = 0
        self.state: dict[str, torch.Tensor] = {}  # device-side sums and maxima
        self.per_seq: dict[str, list[torch.Tensor]] = {k: [] for k in self.PER_SEQUENCE}
        # spectra of the first sequences: dicts of [b] tensors, or Futures of them while workers compute
        self.spectra: list[dict[str, torch.Tensor] | Future] = []

    @property
    def n_tokens(self) -> int:
        return int(self.state["n_tokens"]) if "n_tokens" in self.state else 0

    def update(self, hidden: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
               unit: torch.Tensor | None = None) -> None:
        """``unit``: the caller's already-normalised, masked rows of ``hidden`` (saves a pass)."""
        self.add(self.measure(hidden, mask, positions, unit))

    def spectrum_rows(self, mask: torch.Tensor) -> int:
        """How many leading rows of a batch with this ``mask`` [B, S] :meth:`measure` takes spectra of."""
        take = self.spectrum_seqs - self.n_seqs
        if take <= 0:
            return 0
        kept = (mask.sum(dim=1) >= 2).cumsum(dim=0)
        return min(int(torch.searchsorted(kept, torch.tensor(take, device=kept.device))) + 1, mask.shape[0])

    def measure(self, hidden: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                unit: torch.Tensor | None = None, norms: torch.Tensor | None = None,
                unit_upper: torch.Tensor | None = None, spectra: str = "wait") -> dict:
        """One batch's contribution, without touching the state (see :meth:`add`).

        ``unit``, ``norms`` [B, S] and ``unit_upper`` [rows, S, S] (the products of the unit rows on and
        above the diagonal for the first :meth:`spectrum_rows` rows, from
        :func:`upper_pair_sums`): what the caller has already computed, to save passes and products.
        ``spectra``: ``"wait"`` computes the spectra in the worker threads and waits; ``"async"``
        leaves them running as Futures (resolved by :meth:`finalize` or when pickled), so an
        accelerator's forward pass goes on meanwhile; ``"defer"`` only prepares them, for
        :meth:`start_spectra` to hand to the workers later (all layers of a batch at once);
        ``"inline"`` computes them in this thread (for a caller that is itself a worker).
        """
        keep = mask.sum(dim=1) >= 2
        if not bool(keep.all()):
            if unit_upper is not None:
                unit_upper = unit_upper[keep[: len(unit_upper)]]
            hidden, mask, positions = hidden[keep], mask[keep], positions[keep]
            unit = None if unit is None else unit[keep]
            norms = None if norms is None else norms[keep]
        if hidden.shape[0] == 0:
            return {"n_seqs": 0, "spectra": []}
        if norms is None:
            norms = torch.linalg.vector_norm(hidden, dim=-1)
        if unit is None:
            unit = hidden / norms.clamp_min(NORM_FLOOR).unsqueeze(-1) * mask.unsqueeze(-1)
        batch = {"n_seqs": hidden.shape[0], **self._cone(unit, mask), **self._norms(norms, mask, positions),
                 "mean_cos_dim_scaled": self._dim_scaled_cosine(hidden, mask)}
        take = max(0, self.spectrum_seqs - self.n_seqs)
        jobs = self._spectrum_jobs(hidden[:take], mask[:take], norms[:take],
                                   None if unit_upper is None else unit_upper[:take]) if take else []
        batch["spectra"] = jobs
        if spectra == "inline":
            batch["spectra"] = [function(*arguments) for function, *arguments in jobs]
        elif spectra != "defer":
            self.start_spectra(batch)
            if spectra == "wait":
                batch["spectra"] = [f.result() for f in batch["spectra"]]
        return batch

    @staticmethod
    def start_spectra(batch: dict) -> None:
        """Hand a measured batch's prepared spectra to the worker threads (Futures in their place)."""
        pool = worker_pool()
        batch["spectra"] = [pool.submit(*job) if isinstance(job, tuple) else job for job in batch["spectra"]]

    def add(self, batch: dict) -> None:
        """Fold a batch from :meth:`measure` into the state."""
        if not batch["n_seqs"]:
            return
        old = self.state.get("massive_at")
        counts = batch["massive_at"]
        if old is not None and len(old) != len(counts):  # batches of other widths: align on the longer
            size = max(len(old), len(counts))
            counts = torch.nn.functional.pad(counts, (0, size - len(counts)))
            self.state["massive_at"] = torch.nn.functional.pad(old, (0, size - len(old)))
        _add(self.state, angle_hist=batch["angle_hist"], angle_sum=batch["angle_sum"], n_tokens=batch["n_tokens"],
             norm_sum=batch["norm_sum"], massive_at=counts)
        _max(self.state, angle_max=batch["angle_max"], norm_max=batch["norm_max"])
        for key in self.PER_SEQUENCE:
            _append_joined(self.per_seq[key], batch[key])
        self.spectra.extend(batch["spectra"])
        self.n_seqs += batch["n_seqs"]

    @staticmethod
    def _cone(unit: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        axis = unit.sum(dim=1)
        axis = axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
        cos = torch.bmm(unit, axis.unsqueeze(-1)).squeeze(-1)[mask].clamp(-1.0, 1.0)
        deg = torch.rad2deg(torch.arccos(cos.double()))
        return {"angle_hist": torch.histc(deg.float(), ANGLE_BINS, 0.0, 180.0).double(), "angle_sum": deg.sum(),
                "n_tokens": mask.sum(), "angle_max": deg.max()}

    @staticmethod
    def _norms(norms: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        median = norms.masked_fill(~mask, math.nan).nanmedian(dim=1).values
        largest = norms.masked_fill(~mask, -math.inf).max(dim=1).values
        massive = mask & (norms > MASSIVE_FACTOR * median.unsqueeze(1))
        return {"norm_max_over_median": (largest / median).double(),
                "massive_at": torch.bincount(positions[massive], minlength=positions.shape[1]).double(),
                "norm_sum": norms.double()[mask].sum(), "norm_max": largest.max()}

    @staticmethod
    def _dim_scaled_cosine(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        counts = mask.sum(dim=1, keepdim=True).to(hidden.dtype)
        rms = (torch.linalg.vector_norm(hidden * m, dim=1) / counts.sqrt()).clamp_min(NORM_FLOOR)
        scaled = hidden / rms.unsqueeze(1)
        weights = mask.to(hidden.dtype) / torch.linalg.vector_norm(scaled, dim=-1).clamp_min(NORM_FLOOR)
        # sum_{i != j} u_i.u_j = |sum_i u_i|^2 - sum_i |u_i|^2 (= n for unit rows): no S x S matrix
        resultant = torch.bmm(weights.unsqueeze(1), scaled).squeeze(1).double().square().sum(dim=-1)
        n = counts.squeeze(-1).double()
        return (resultant - n) / (n * (n - 1))

    @staticmethod
    def _spectrum_jobs(hidden: torch.Tensor, mask: torch.Tensor, norms: torch.Tensor,
                       unit_upper: torch.Tensor | None) -> list[tuple]:
        """One ``(function, *arguments)`` of :mod:`condense.metrics.spectrum` per sequence, on its own
        counted rows only: padding rows would add spurious near-zero eigenvalues whose float32 noise
        shifts the entropy. With ``unit_upper`` (and n <= D) the worker builds the Gram matrix from the
        pair products already formed, G_ij = |x_i| |x_j| cos_ij; otherwise from a copy of the rows
        (on an accelerator the product is formed there and only the Gram matrix travels)."""
        traces = norms.double().square().masked_fill(~mask, 0.0).sum(dim=1)
        jobs = []
        for k, counted in enumerate(mask):
            n = int(counted.sum())
            if unit_upper is not None and n <= hidden.shape[2]:
                mean = (hidden[k] * counted.unsqueeze(-1)).sum(dim=0) / n
                jobs.append((spectrum_of_products, unit_upper[k], counted, norms[k], mean, traces[k: k + 1]))
            elif hidden.device.type == "cpu":
                jobs.append((spectrum_of_rows, hidden[k][counted].unsqueeze(0), traces[k: k + 1]))
            else:
                gram, mean = gram_of_rows(hidden[k][counted].unsqueeze(0))
                jobs.append((spectrum_from_gram, gram, mean, n, traces[k: k + 1]))
        return jobs

    def resolve(self) -> None:
        """Wait for the spectra still being computed by worker threads."""
        self.spectra = [s.result() if isinstance(s, Future) else s for s in self.spectra]

    def __getstate__(self) -> dict:
        self.resolve()
        spectra = ([{k: torch.cat([s[k].cpu() for s in self.spectra]) for k in SPECTRAL_KEYS}]
                   if len(self.spectra) > 1 else self.spectra)
        per_seq = {k: [torch.cat([p.cpu() for p in v])] if len(v) > 1 else v for k, v in self.per_seq.items()}
        return {**self.__dict__, "per_seq": per_seq, "spectra": spectra}

    def finalize(self) -> dict[str, float]:
        self.resolve()
        st = {k: v.cpu().numpy() for k, v in self.state.items()}
        n_tokens = float(st.get("n_tokens", 0))
        p95 = quantiles_from_counts(st.get("angle_hist", np.zeros(ANGLE_BINS)), 0.0, 180.0, (0.95,))[0]
        massive_at = st.get("massive_at", np.zeros(0))
        top = sorted(np.flatnonzero(massive_at), key=lambda pos: (-massive_at[pos], pos))[:5]
        cols = {
            "cone_half_angle_mean_deg": float(st["angle_sum"]) / n_tokens if n_tokens else math.nan,
            "cone_half_angle_p95_deg": p95,
            "cone_half_angle_max_deg": float(st["angle_max"]) if n_tokens else math.nan,
            "cone_log10_sphere_fraction": cone_log10_sphere_fraction(p95, self.dim) if n_tokens else math.nan,
            "norm_mean": float(st["norm_sum"]) / n_tokens if n_tokens else math.nan,
            "norm_max": float(st["norm_max"]) if n_tokens else math.nan,
            "n_massive_tokens": float(massive_at.sum()),
            "massive_positions": ";".join(f"{pos}:{int(massive_at[pos])}" for pos in top),
            "n_tokens": n_tokens,
            "n_seqs": float(self.n_seqs),
        }
        for key, values in self.per_seq.items():
            cols[key] = float(torch.cat(values).mean()) if values else math.nan
        for key in SPECTRAL_KEYS:
            cols[key] = float(torch.cat([s[key].cpu() for s in self.spectra]).mean()) if self.spectra else math.nan
        return cols


def _add(state: dict[str, torch.Tensor], **values: torch.Tensor) -> None:
    """Accumulate tensors into ``state`` on their own device (a resumed state may sit on the CPU)."""
    for key, value in values.items():
        old = state.get(key)
        state[key] = value if old is None else old.to(value.device) + value


def _max(state: dict[str, torch.Tensor], **values: torch.Tensor) -> None:
    for key, value in values.items():
        old = state.get(key)
        state[key] = value if old is None else torch.maximum(old.to(value.device), value)
