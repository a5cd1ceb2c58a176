"""Training with the dispersion loss, and condensation measured while any training runs.

- :func:`finetune`: fine-tune or pre-train a causal LM on a corpus, with an optional dispersion
  loss, probing condensation on held-out text every few steps; writes one output folder,
  checkpoints periodically beside it, reports to TensorBoard on request.
- :func:`load_finetune` / :class:`FinetuneRun`: read such a folder back.
- :class:`FinetuneSettings`: the settings, their defaults and validation.
- :class:`CondensationCallback`: a ``transformers.TrainerCallback`` that probes held-out texts
  during ``Trainer.train()`` and logs through the Trainer (imported on first access, so this
  package does not import ``transformers`` by itself).
- :class:`CondensationMonitor`: the same for a hand-written loop (``monitor(model, step)``), and
  :class:`TrainingReporter` to send its scalars to TensorBoard & co. without a Trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from condense.training.finetune import finetune
from condense.training.monitor import (
    PROBE_COLUMNS,
    CondensationMonitor,
    ProbeHistory,
    condensation_scalars,
    heldout_lm_loss,
)
from condense.training.reporting import TrainingReporter
from condense.training.resume import FinetuneInterrupted
from condense.training.run import FinetuneRun, load_finetune
from condense.training.settings import DISPERSIONS, FinetuneSettings

if TYPE_CHECKING:
    from condense.training.callback import CondensationCallback

__all__ = ["finetune", "heldout_lm_loss", "load_finetune", "FinetuneRun", "FinetuneSettings", "DISPERSIONS",
           "FinetuneInterrupted", "CondensationCallback", "CondensationMonitor", "ProbeHistory", "PROBE_COLUMNS",
           "condensation_scalars", "TrainingReporter"]


def __getattr__(name: str) -> Any:
    # Lazy: the callback subclasses transformers.TrainerCallback.
    if name == "CondensationCallback":
        from condense.training.callback import CondensationCallback

        return CondensationCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
