"""``transformers.Trainer`` that adds the dispersion loss to the language-modelling loss.

This is the only module of ``condense.dispersion`` that imports ``transformers``;
``condense.dispersion`` exposes :class:`DispersionTrainer` lazily.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather

from .hooks import DispersionHook, Where, attach_dispersion
from .losses import DispersionLoss

__all__ = ["DispersionTrainer"]


class DispersionTrainer(Trainer):
    """Trainer whose training loss is ``lm_loss + dispersion_coeff * dispersion``.

    ``dispersion`` (default ``DispersionLoss()``) is applied to the outputs of the blocks chosen
    by ``dispersion_where`` (see :func:`condense.dispersion.select_blocks`), masked by the
    batch's ``attention_mask``, in training only; evaluation reports the LM loss alone. Every
    training log also gets ``lm_loss`` and ``dispersion_loss`` (uncoefficiented), averaged per
    optimizer step like ``loss``, so that ``loss = lm_loss + dispersion_coeff * dispersion_loss``.

    All other arguments are those of ``transformers.Trainer``. DataParallel (``n_gpu > 1`` in one
    process) is refused: its replicas would call the hooks from several threads; use DDP.
    """

    def __init__(
        self,
        *args: Any,
        dispersion: DispersionLoss | None = None,
        dispersion_coeff: float = 0.1,
        dispersion_where: Where = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:
            raise ValueError("DispersionTrainer does not support DataParallel (n_gpu > 1); use DDP")
        self.dispersion = dispersion if dispersion is not None else DispersionLoss()
        self.dispersion_coeff = dispersion_coeff
        self.dispersion_where = dispersion_where
        self._dispersion_hook: DispersionHook | None = None
        # Contributions to the reported `loss` (lm, dispersion) summed since the optimizer step
        # `_dispersion_since_step`, until the next training log.
        self._dispersion_sums: Tensor | None = None
        self._dispersion_since_step = 0
        if self.model is not None:  # hook now so that a bad `dispersion_where` fails early
            self._hook(self.model)

    def _hook(self, model: torch.nn.Module) -> DispersionHook:
        """The hook on the core of ``model``, re-attached if the model was replaced (model_init)."""
        core = self.accelerator.unwrap_model(model)
        if self._dispersion_hook is None or self._dispersion_hook.model is not core:
            if self._dispersion_hook is not None:
                self._dispersion_hook.remove()
            self._dispersion_hook = attach_dispersion(core, self.dispersion_where, self.dispersion)
        return self._dispersion_hook

    def _loss_is_scaled_for_ga(self, num_items_in_batch: Tensor | int | None) -> bool:
        # Mirrors Trainer.training_step: if True the Trainer will not divide the loss by the
        # number of accumulation steps, so the (per-micro-batch mean) dispersion must be.
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (
            self.model_accepts_loss_kwargs and num_items_in_batch is not None
        ) or self.compute_loss_func is not None

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """LM loss from ``Trainer.compute_loss`` plus, in training, the weighted dispersion."""
        hook = self._hook(model)
        lm_loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if not model.training:
            return (lm_loss, outputs) if return_outputs else lm_loss
        dispersion = hook.loss(inputs.get("attention_mask"))
        steps = getattr(self, "current_gradient_accumulation_steps", 1)
        if self._loss_is_scaled_for_ga(num_items_in_batch):
            dispersion_term = dispersion / steps
            lm_reported = lm_loss.detach()
        else:
            dispersion_term = dispersion
            lm_reported = lm_loss.detach() / steps
        loss = lm_loss + self.dispersion_coeff * dispersion_term.to(lm_loss.dtype)
        sums = torch.stack([lm_reported.float(), dispersion.detach().float() / steps])
        if self._dispersion_sums is None:
            self._dispersion_sums = sums
            self._dispersion_since_step = self.state.global_step
        else:
            self._dispersion_sums = self._dispersion_sums + sums
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``lm_loss`` and ``dispersion_loss`` to training logs (those with ``loss``)."""
        if "loss" in logs and self._dispersion_sums is not None:
            steps = max(self.state.global_step - self._dispersion_since_step, 1)
            gathered = nested_gather(self._dispersion_sums, self.args.parallel_mode)
            lm_sum, dispersion_sum = gathered.view(-1, 2).mean(0).tolist()
            logs["lm_loss"] = lm_sum / steps
            logs["dispersion_loss"] = dispersion_sum / steps
            self._dispersion_sums = None
        super().log(logs, start_time)
