"""Dispersion loss (PAPER.md, "The dispersion loss"): push token vectors apart during training.

- :class:`DispersionLoss` / :func:`dispersion_loss`: the loss on hidden states ``[B, L, F]``.
- :func:`attach_dispersion`: hooks on a model's Transformer blocks that collect their outputs.
- :class:`DispersionTrainer`: a ``transformers.Trainer`` adding the loss; imported on first
  access, so importing this package does not import ``transformers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hooks import DispersionHook, Where, attach_dispersion, find_blocks, select_blocks
from .losses import VARIANTS, DispersionLoss, Variant, dispersion_loss

if TYPE_CHECKING:
    from .trainer import DispersionTrainer

__all__ = [
    "VARIANTS",
    "Variant",
    "Where",
    "DispersionLoss",
    "dispersion_loss",
    "DispersionHook",
    "attach_dispersion",
    "find_blocks",
    "select_blocks",
    "DispersionTrainer",
]


def __getattr__(name: str) -> Any:
    # Lazy: the trainer needs transformers, the loss and hooks do not.
    if name == "DispersionTrainer":
        from .trainer import DispersionTrainer

        return DispersionTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
