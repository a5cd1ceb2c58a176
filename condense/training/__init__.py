"""Training with the dispersion loss, and condensation measured while any training runs.

- :func:`finetune`: fine-tune or pre-train a causal LM on a corpus, with an optional dispersion
  loss, probing condensation on held-out text every few steps; writes one output folder,
  checkpoints periodically beside it, reports to TensorBoard on request.
- :func:`load_finetune` / :class:`FinetuneRun`: read such a folder back.
- :class:`FinetuneSettings`: the settings, their defaults and validation.
- :class:`CondensationCallback`: a ``transformers.TrainerCallback`` that probes held-out texts
  during ``Trainer.train()`` and logs through the Trainer.
- :class:`CondensationMonitor`: the same for a hand-written loop (``monitor(model, step)``), and
  :class:`TrainingReporter` to send its scalars to TensorBoard & co. without a Trainer.

Each name is imported on first use (:mod:`condense.lazy`), so this package imports neither torch
nor ``transformers`` by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from condense.lazy import lazy_exports

if TYPE_CHECKING:
    from condense.training.callback import CondensationCallback
    from condense.training.finetune import finetune
    from condense.training.monitor import (PROBE_COLUMNS, CondensationMonitor, ProbeHistory, condensation_scalars,
                                           heldout_lm_loss)
    from condense.training.reporting import TrainingReporter
    from condense.training.resume import FinetuneInterrupted
    from condense.training.run import FinetuneRun, load_finetune
    from condense.training.settings import DISPERSIONS, FinetuneSettings

__all__ = ["finetune", "heldout_lm_loss", "load_finetune", "FinetuneRun", "FinetuneSettings", "DISPERSIONS",
           "FinetuneInterrupted", "CondensationCallback", "CondensationMonitor", "ProbeHistory", "PROBE_COLUMNS",
           "condensation_scalars", "TrainingReporter"]

lazy_exports(__name__, {
    "condense.training.callback": ("CondensationCallback",),
    "condense.training.finetune": ("finetune",),
    "condense.training.monitor": ("PROBE_COLUMNS", "CondensationMonitor", "ProbeHistory", "condensation_scalars",
                                  "heldout_lm_loss"),
    "condense.training.reporting": ("TrainingReporter",),
    "condense.training.resume": ("FinetuneInterrupted",),
    "condense.training.run": ("FinetuneRun", "load_finetune"),
    "condense.training.settings": ("DISPERSIONS", "FinetuneSettings"),
})
