"""Interruption and resume: SIGINT/SIGTERM stop a probe at the next batch boundary and leave the
accumulators in a checkpoint file; ``--resume`` continues from it to the same numbers."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from condense.errors import CondenseError
from condense.results.atomic import atomic_file

__all__ = ["ProbeInterrupted", "StopRequest", "stop_requests", "save_checkpoint", "load_checkpoint",
           "checkpoint_path_for"]

CHECKPOINT_FORMAT = 1


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
