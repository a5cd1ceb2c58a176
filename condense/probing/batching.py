"""Padded batches of token sequences, and a forward loop that backs off on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    """Yield (batch, {entry: measure(batch, entry, hidden states)}) over all sequences.

    Without ``workers``, ``measure`` runs inside the forward pass as each selected entry is computed,
    so only one layer's hidden states are alive at a time. With ``workers`` (a CPU batch whose selected
    layers together are no bigger than the floor's ``output_hidden_states``), the forward pass keeps
    them and the workers measure the layers in parallel after it, each on one thread, so every core
    is busy and none waits at a barrier. What ``measure`` returns (small sums) is collected per batch.
    With ``auto``, an out-of-memory error (in the forward or in ``measure``) drops the batch's
    partial results, halves the batch size and retries the same batch; ``used["batch_size"]``
    ends as the size that fitted. ``start`` skips sequences already done.
    """
    total = sum(len(s.input_ids) for s in sequences)
    lo = start
    with tqdm(total=total, initial=sum(len(s.input_ids) for s in sequences[:start]), unit="tok", unit_scale=True,
              desc=label, disable=quiet, leave=False) as bar:
        while lo < len(sequences):
            chunk = sequences[lo: lo + batch_size]
            batch = make_batch(chunk, lo, pad_id, reader.input_device, drop_special, drop_first)
            measured: dict[int, Any] = {}
            try:
                if workers is None:
                    reader.read(batch.ids, batch.attention, layers,
                                lambda i, hidden: measured.__setitem__(i, measure(batch, i, hidden)))
                else:
                    held: dict[int, torch.Tensor] = {}
                    reader.read(batch.ids, batch.attention, layers, held.__setitem__)
                    jobs = {i: workers.executor.submit(measure, batch, i, held.pop(i)) for i in sorted(held)}
                    measured = {i: job.result() for i, job in jobs.items()}
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                if not auto or batch_size == 1:
                    raise CondenseError(
                        f"out of memory at batch size {batch_size}; try --batch-size auto or smaller, "
                        "--max-length lower, --dtype bfloat16, or --device-map auto"
                    ) from None
                del batch, measured
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                batch_size = (batch_size + 1) // 2
                continue
            used["batch_size"] = batch_size
            yield batch, measured
            bar.update(int(batch.attention.sum()))
            lo += len(chunk)
