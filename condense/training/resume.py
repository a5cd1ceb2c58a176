"""Periodic checkpoints of a finetune run, so that a hard kill (SIGKILL, out-of-memory kill,
pre-emption, power cut) loses at most one interval, and ``--resume`` continues to the same numbers.

A run's work folder is ``.<out name>.resume/`` beside its output folder (never inside it, and
never a finished-looking folder); it holds ``state.pt`` and, with ``--report-to tensorboard``, the
live event files. ``state.pt`` is replaced atomically (a temporary file, fsync, rename: ``atomic_file``), so a kill
while saving leaves the previous checkpoint intact. It holds everything the next step depends
on: weights, optimizer state, random-generator states, the step (which is the data position:
the batch order is a function of the seed and the step), the loss log, and the probes so far.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from condense.errors import CondenseError
from condense.results.atomic import StorageError, atomic_file

__all__ = ["STATE_FORMAT", "FinetuneInterrupted", "work_folder", "run_key", "Checkpointer"]

STATE_FORMAT = 1
STATE_FILE = "state.pt"


class FinetuneInterrupted(CondenseError):
    """Training was stopped by a signal after saving a checkpoint (exit code 130)."""

    exit_code = 130


def work_folder(out: str | Path) -> Path:
    """The hidden folder beside ``out`` that holds a run's checkpoint and live logs."""
    out = Path(out)
    return out.parent / f".{out.name}.resume"


def run_key(model: str, settings: dict[str, Any], blocks: torch.Tensor, heldout_hash: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: model, settings and the exact token data."""
    return {"model": model, "settings": settings, "heldout": heldout_hash,
            "train": hashlib.sha256(blocks.numpy().tobytes()).hexdigest()}


class Checkpointer:
    """Save a run's state to ``folder/state.pt`` every ``every_seconds`` of elapsed time (0: never
    on a timer; :meth:`save` still works, e.g. on a signal) and read it back for a resume."""

    def __init__(self, folder: Path, key: dict[str, Any], every_seconds: float) -> None:
        if not (isinstance(every_seconds, (int, float)) and every_seconds >= 0):
            raise CondenseError(f"bad --checkpoint-every {every_seconds!r}: seconds >= 0 (0 turns it off)")
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        self.key = key
        self.every = float(every_seconds)
        self.last = time.monotonic()
        self.seconds_saving = 0.0
        self.saves = 0

    def start(self) -> None:
        """Start the interval now (when training starts, not when the run was set up)."""
        self.last = time.monotonic()

    def due(self) -> bool:
        """Whether the interval has passed since the last save (or the start)."""
        return self.every > 0 and time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with the run's key, atomically (``atomic_file``): a full or read-only
        disk is one StorageError line, any other refusal one CondenseError line, and the previous
        checkpoint stays."""
        t0 = time.perf_counter()
        try:
            with atomic_file(self.path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk raises OSError
                torch.save({"format": STATE_FORMAT, "key": self.key, **state}, f)
        except StorageError:
            raise
        except OSError as err:  # not the disk's fault: a file where the folder should be, permissions
            raise CondenseError(f"cannot write the finetune checkpoint in {str(self.folder)!r} "
                                f"({err.strerror or err}); check that folder or use --checkpoint-every 0") from None
        self.last = time.monotonic()
        self.seconds_saving += time.perf_counter() - t0
        self.saves += 1

    def exists(self) -> bool:
        """Whether a checkpoint was saved (by this run or an interrupted one)."""
        return self.path.exists()

    def load(self, map_location: torch.device) -> dict[str, Any]:
        """The saved state; CondenseError if it is unreadable or belongs to another run."""
        try:
            state = torch.load(self.path, map_location=map_location, weights_only=False)  # our own file
        except Exception as err:
            raise CondenseError(f"checkpoint {str(self.path)!r} is unreadable ({type(err).__name__}); "
                                "delete it to start over") from None
        if state.get("format") != STATE_FORMAT or state.get("key") != self.key:
            raise CondenseError(
                f"checkpoint {str(self.path)!r} was made by a different model, corpus or settings; repeat the "
                f"original command with --resume, or delete {str(self.folder)!r} to start over"
            )
        return state

    def remove(self) -> None:
        """Delete the work folder (after the output folder is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)
