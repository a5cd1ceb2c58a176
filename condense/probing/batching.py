"""Padded batches of token sequences, and a forward loop that backs off on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from condense.errors import CondenseError
from condense.metrics.spectrum import WorkerPool
from condense.probing.corpus import TokenSequence

__all__ = ["Batch", "make_batch", "forward_batches", "auto_batch_start", "is_out_of_memory", "CPU_TOKENS_PER_BATCH"]

CPU_TOKENS_PER_BATCH = 512
_OOM_MESSAGES = ("out of memory", "not enough memory", "can't allocate memory", "failed to allocate")


@dataclass
class Batch:
    """One padded batch (right padding, so positions are token indices).

    ids, attention, mask, positions: [B, S]. ``mask`` marks the tokens that count (padding, and
    unless kept, special tokens and the first token, removed); ``offset`` is the index of the
    batch's first sequence.
    """

    ids: torch.Tensor
    attention: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    offset: int


def make_batch(chunk: list[TokenSequence], offset: int, pad_id: int, device: torch.device,
               drop_special: bool, drop_first: bool) -> Batch:
    width = max(len(s.input_ids) for s in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(chunk), width), dtype=torch.bool)
    special = torch.zeros((len(chunk), width), dtype=torch.bool)
    for r, s in enumerate(chunk):
        ids[r, : len(s.input_ids)] = torch.tensor(s.input_ids)
        attention[r, : len(s.input_ids)] = True
        special[r, : len(s.special)] = torch.tensor(s.special, dtype=torch.bool)
    mask = attention & ~special if drop_special else attention.clone()
    if drop_first:
        mask[:, 0] = False
    positions = torch.arange(width).expand(len(chunk), -1)
    return Batch(ids.to(device), attention.to(device), mask.to(device), positions.to(device), offset)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU/MPS allocators' RuntimeError."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)
    )


def auto_batch_start(num_seqs: int, max_length: int, hidden_size: int, n_layers: int, device: torch.device) -> int:
    """First batch size tried by ``--batch-size auto`` (the default; halved on out-of-memory until it fits).

    Accelerators start at 64 sequences (an OOM there is cheap to catch). On the CPU, batches of
    about ``CPU_TOKENS_PER_BATCH`` (512) tokens: one 512-token sequence, four of 128. Measured on
    SmolLM2-135M, larger batches cost more CPU time per token, not less (their activations
    leave the caches), and every sequence more in a batch adds its activations to the peak
    memory. An oversized CPU allocation may swap or summon the OOM killer instead of raising, so
    the start is also capped by what a generous activation estimate (hidden states of every
    layer plus 16 working copies, in float32) allows in half of the available memory.
    """
    if device.type != "cpu":
        return max(1, min(num_seqs, 64))
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        available = 4 << 30
    per_seq = max_length * hidden_size * 4 * (n_layers + 16) + max_length**2 * 4 * 32
    return max(1, min(num_seqs, CPU_TOKENS_PER_BATCH // max_length, available // 2 // per_seq))


def forward_batches(reader, sequences: list[TokenSequence], batch_size: int, auto: bool, pad_id: int,
                    layers: list[int], drop_special: bool, drop_first: bool, quiet: bool, label: str,
                    used: dict, measure: Callable[[Batch, int, torch.Tensor], Any], start: int = 0,
                    workers: WorkerPool | None = None) -> Iterator[tuple[Batch, dict[int, Any]]]:
    """Yield (batch, {entry: measure(batch, entry, hidden states)}) over all sequences, in order.

    Without ``workers``, ``measure`` runs inside the forward pass as each selected entry is computed,
    so only one layer's hidden states are alive at a time. With ``workers`` (a CPU batch whose selected
    layers together are no bigger than the floor's ``output_hidden_states``), the forward pass keeps
    them and the workers measure them, each layer on one thread, during the next batch's forward
    pass: the cores the forward pass leaves idle (between its operations) do the measuring. A batch's
    jobs start only after the batch before it was yielded, so ``measure`` sees the caller's state
    as a serial loop would. What ``measure`` returns (small sums) is collected per batch.
    With ``auto``, an out-of-memory error (in the forward or in ``measure``) drops the partial
    results of the batches not yet yielded, halves the batch size and retries from the first of
    them; ``used["batch_size"]`` ends as the size that fitted. ``start`` skips sequences already done.
    """
    total = sum(len(s.input_ids) for s in sequences)
    lo = start
    pending: tuple[Batch, dict[int, Future]] | None = None  # measured by the workers meanwhile
    with tqdm(total=total, initial=sum(len(s.input_ids) for s in sequences[:start]), unit="tok", unit_scale=True,
              desc=label, disable=quiet, leave=False) as bar:
        try:
            while lo < len(sequences) or pending:
                batch = None
                if lo < len(sequences):
                    batch = make_batch(sequences[lo: lo + batch_size], lo, pad_id, reader.input_device,
                                       drop_special, drop_first)
                    measured: dict[int, Any] = {}  # the measurements, or (with workers) the hidden states
                    keep = measured.__setitem__
                    try:
                        reader.read(batch.ids, batch.attention, layers,
                                    keep if workers else lambda i, hidden: keep(i, measure(batch, i, hidden)))
                    except Exception as err:
                        batch_size = _smaller(err, auto, batch_size)
                        continue  # a pending batch is unaffected: it is collected after the smaller forward pass
                if pending:
                    done, jobs = pending
                    pending = None
                    try:
                        results = _results(jobs)
                    except Exception as err:
                        batch_size, lo = _smaller(err, auto, batch_size), done.offset
                        continue  # this batch's forward pass and the next are repeated, smaller
                    yield done, results
                    bar.update(int(done.attention.sum()))
                if batch is None:
                    continue
                used["batch_size"] = batch_size
                lo += batch.ids.shape[0]
                if workers is None:
                    yield batch, measured
                    bar.update(int(batch.attention.sum()))
                else:
                    pending = batch, {i: workers.executor.submit(measure, batch, i, measured.pop(i))
                                      for i in sorted(measured)}
        finally:
            if pending:  # stopped early: no job outlives the loop
                _results(pending[1], cancel=True)


def _smaller(err: Exception, auto: bool, batch_size: int) -> int:
    """The batch size to retry with after ``err``; raises ``err`` again unless it is an out-of-memory
    error that ``--batch-size auto`` can back off from."""
    if not is_out_of_memory(err):
        raise err
    if not auto or batch_size == 1:
        raise CondenseError(
            f"out of memory at batch size {batch_size}; try --batch-size auto or smaller, "
            "--max-length lower, --dtype bfloat16, or --device-map auto"
        ) from None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return (batch_size + 1) // 2


def _results(jobs: dict[int, Future], cancel: bool = False) -> dict[int, Any]:
    """Every job's result once all have finished (the first error raised only then), or with
    ``cancel``, the jobs not yet started dropped and the rest waited for, results ignored."""
    if cancel:
        for job in jobs.values():
            job.cancel()
    wait(jobs.values())
    return {} if cancel else {i: job.result() for i, job in jobs.items()}
