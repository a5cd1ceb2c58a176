"""Dispersion loss (PAPER.md, "The dispersion loss"): push token vectors apart during training.

- :class:`DispersionLoss` / :func:`dispersion_loss`: the loss on hidden states ``[B, L, F]``.
- :func:`attach_dispersion`: hooks on a model's Transformer blocks that collect their outputs.
- :class:`DispersionTrainer`: a ``transformers.Trainer`` adding the loss.

Each name is imported on first use (:mod:`condense.lazy`): this package imports neither torch nor
``transformers`` by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from condense.lazy import lazy_exports

if TYPE_CHECKING:
    from .hooks import DispersionHook, Where, attach_dispersion, find_blocks, select_blocks
    from .losses import DispersionLoss, dispersion_loss
    from .trainer import DispersionTrainer
    from .variants import VARIANTS, Variant

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


lazy_exports(__name__, {
    "condense.dispersion.hooks": ("DispersionHook", "Where", "attach_dispersion", "find_blocks", "select_blocks"),
    "condense.dispersion.losses": ("DispersionLoss", "dispersion_loss"),
    "condense.dispersion.trainer": ("DispersionTrainer",),
    "condense.dispersion.variants": ("VARIANTS", "Variant"),
})
