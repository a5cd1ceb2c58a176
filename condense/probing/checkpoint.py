"""Interruption and resume: SIGINT/SIGTERM stop a probe at the next batch boundary and leave the
accumulators in a checkpoint file, which is also rewritten every few minutes (so a SIGKILL, an
out-of-memory kill or a pre-emption loses at most that interval); ``--resume`` continues from it
to the same numbers."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from condense.errors import CondenseError
from condense.results.atomic import atomic_file

__all__ = ["ProbeInterrupted", "StopRequest", "stop_requests", "save_checkpoint", "load_checkpoint",
           "checkpoint_path_for", "CheckpointPlan", "DEFAULT_CHECKPOINT_EVERY"]

CHECKPOINT_FORMAT = 1
DEFAULT_CHECKPOINT_EVERY = 300.0  # seconds between periodic checkpoints


@dataclass
class CheckpointPlan:
    """Where a probe's checkpoint goes and how often it is rewritten while the probe runs.

    ``every``: seconds between periodic saves at batch boundaries (default 300); None or 0 saves
    only when SIGINT/SIGTERM stops the run. ``due()`` says whether the interval has passed since
    the plan was made or last ``saved()``.
    """

    path: Path
    every: float | None = DEFAULT_CHECKPOINT_EVERY
    last: float | None = None  # time.monotonic() of the last save (default: when the plan was made)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.last = time.monotonic() if self.last is None else self.last
        if self.every is not None and not (isinstance(self.every, (int, float)) and self.every >= 0):
            raise CondenseError(f"bad --checkpoint-every {self.every!r}: give seconds >= 0 (0 turns periodic checkpoints off)")

    @classmethod
    def of(cls, checkpoint: str | Path | CheckpointPlan | None) -> CheckpointPlan | None:
        """A plan from a path (default interval), a plan (returned as is), or None."""
        if checkpoint is None or isinstance(checkpoint, CheckpointPlan):
            return checkpoint
        return cls(Path(checkpoint))

    def due(self) -> bool:
        return bool(self.every) and time.monotonic() - self.last >= self.every

    def saved(self) -> None:
        self.last = time.monotonic()


class ProbeInterrupted(CondenseError):
    """The run was stopped by a signal after saving a resumable checkpoint (exit code 130)."""

    exit_code = 130


class StopRequest:
    """Set by the signal handlers; the probe loop polls it between batches."""

    def __init__(self) -> None:
        self.signal_name: str | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turn SIGINT and SIGTERM into a polite request to stop after the current batch.

    Stopping between batches keeps every accumulator consistent, and the resumed run sums the
    same batches in the same order, so its numbers are identical to an uninterrupted run.
    A second signal while waiting raises KeyboardInterrupt at once.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, _frame):
        if request.signal_name is not None:
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def checkpoint_path_for(out: str | Path) -> Path:
    """Where the checkpoint of a run folder lives: a hidden file beside it, never inside it."""
    out = Path(out)
    return out.parent / f".{out.name}.resume.pt"


def save_checkpoint(path: Path, key: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` (accumulators, progress) with its identifying ``key`` atomically.

    A full disk, quota or read-only file system raises one-line StorageError and keeps the
    previous checkpoint.
    """
    with atomic_file(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk raises OSError
        torch.save({"format": CHECKPOINT_FORMAT, "key": key, **state}, f)


def load_checkpoint(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint; CondenseError if it belongs to another model, corpus or settings."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file
    except Exception as err:
        raise CondenseError(f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}); delete it to start over") from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("key") != key:
        raise CondenseError(
            f"checkpoint {str(path)!r} was made by a different model, corpus or settings; "
            "repeat the original command with --resume, or delete the checkpoint to start over"
        )
    return state
