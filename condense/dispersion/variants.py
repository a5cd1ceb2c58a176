"""The names of the dispersion-loss variants (no torch here: the command line lists them)."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["VARIANTS", "Variant"]

Variant = Literal["angular_spread", "decorrelation", "l2_repel", "orthogonalization"]
VARIANTS: tuple[str, ...] = get_args(Variant)
