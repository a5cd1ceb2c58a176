"""Finetune settings: defaults, validation (before any model loads), and the probe schedule."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from condense.dispersion import VARIANTS
from condense.errors import CondenseError

__all__ = ["DISPERSIONS", "WHERE_HELP", "DEFAULT_CHECKPOINT_SECONDS", "FinetuneSettings"]

DISPERSIONS: tuple[str, ...] = ("none", *VARIANTS)
WHERE_HELP = "all | last | early_half | late_half | block indices such as 0,3,5 (negative counts from the end)"
DEFAULT_CHECKPOINT_SECONDS = 300.0  # between periodic checkpoints of a finetune run
# Default peak learning rates: gentle for pretrained weights, larger from a random init.
DEFAULT_LR = {"pretrained": 5e-5, "random": 5e-4}


@dataclass
class FinetuneSettings:
    """Everything that decides a finetune run (recorded in finetune.json).

    corpus, text_field: the corpus spec (as for ``condense probe``); the last ``heldout`` fraction
        of its documents (at least one) is held out for the held-out loss and the probes.
    revision: the hub branch, tag or commit of a hub model (None: its default branch).
    init: ``pretrained`` (fine-tune) or ``random`` (pre-train from weights seeded by ``seed``).
    dispersion, coeff, where: the regulariser (``none`` or a :data:`condense.dispersion.VARIANTS`
        name), its weight in ``lm_loss + coeff * dispersion_loss``, and the blocks it reads.
    steps, lr, batch_size, seq_len: optimizer steps; peak AdamW learning rate (None: 5e-5
        pretrained, 5e-4 random), reached after a linear warm-up over the first 10 % of steps
        and then held; sequences per step; tokens per sequence (training and probing).
    seed: weights (random init), data order, dropout and dispersion subsampling.
    probe_every, probe_seqs: probe at step 0, every ``probe_every`` steps (None: a quarter of the
        run, rounded up) and at the last step, on ``probe_seqs`` held-out sequences.
    weight_decay, grad_clip: AdamW weight decay (0.01) and the gradient-norm clip (1.0).
    """

    corpus: str = "builtin"
    text_field: str = "text"
    revision: str | None = None
    init: str = "pretrained"
    dispersion: str = "none"
    coeff: float = 0.1
    where: str = "all"
    steps: int = 100
    lr: float | None = None
    batch_size: int = 8
    seq_len: int = 128
    seed: int = 0
    probe_every: int | None = None
    probe_seqs: int = 16
    heldout: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0

    def validate(self) -> None:
        """Raise CondenseError naming the first bad value; resolves ``lr`` and ``probe_every``."""
        for name in ("steps", "batch_size", "probe_seqs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CondenseError(f"bad --{name.replace('_', '-')} {value!r}: must be a positive integer")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise CondenseError(f"bad --seq-len {self.seq_len!r}: need an integer >= 2 (next-token pairs)")
        if self.init not in DEFAULT_LR:
            raise CondenseError(f"bad --init {self.init!r}: use pretrained or random")
        if self.dispersion not in DISPERSIONS:
            raise CondenseError(f"bad --dispersion {self.dispersion!r}: use {', '.join(DISPERSIONS)}")
        if not (isinstance(self.coeff, (int, float)) and math.isfinite(self.coeff) and self.coeff >= 0):
            raise CondenseError(f"bad --coeff {self.coeff!r}: must be a finite number >= 0")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.init]
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise CondenseError(f"bad --lr {self.lr!r}: must be a finite number > 0")
        if self.probe_every is None:
            self.probe_every = math.ceil(self.steps / 4)
        if not isinstance(self.probe_every, int) or self.probe_every < 1:
            raise CondenseError(f"bad --probe-every {self.probe_every!r}: must be a positive integer")
        if not 0 < self.heldout < 1:
            raise CondenseError(f"bad --heldout {self.heldout!r}: a fraction of the documents, 0 < f < 1")
        if self.weight_decay < 0 or not self.grad_clip > 0:
            raise CondenseError("weight_decay must be >= 0 and grad_clip > 0")
        self.where_spec()

    def where_spec(self, n_blocks: int | None = None) -> str | list[int]:
        """``where`` as :func:`condense.dispersion.attach_dispersion` takes it; with ``n_blocks``
        the block indices are also range-checked (CondenseError naming the valid range)."""
        text = str(self.where).strip().lower()
        if text in ("all", "last", "early_half", "late_half"):
            return text
        if not re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", text):
            raise CondenseError(f"bad --where {self.where!r}: use {WHERE_HELP}")
        indices = [int(p) for p in text.split(",")]
        if n_blocks is not None:
            bad = [i for i in indices if not -n_blocks <= i < n_blocks]
            if bad:
                raise CondenseError(
                    f"bad --where {self.where!r}: block {bad[0]} is out of range; this model has "
                    f"{n_blocks} blocks (0..{n_blocks - 1}, or -{n_blocks}..-1)"
                )
            indices = [i % n_blocks for i in indices]
        if len(set(indices)) != len(indices):
            raise CondenseError(f"bad --where {self.where!r}: a block is named twice")
        return indices

    def probe_steps(self) -> list[int]:
        """Steps after which the model is probed: 0, every ``probe_every``, and the last."""
        assert self.probe_every is not None, "validate() first"
        return sorted({0, *range(self.probe_every, self.steps + 1, self.probe_every), self.steps})

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (1-based): linear warm-up, then constant."""
        assert self.lr is not None, "validate() first"
        warmup = max(1, self.steps // 10)
        return self.lr * min(1.0, step / warmup)
