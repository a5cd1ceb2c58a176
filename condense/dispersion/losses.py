"""Dispersion losses: regularisers that push the token vectors of each sequence apart.

See PAPER.md, "The dispersion loss". For one layer's hidden states ``z`` of shape ``[B, L, F]``
every variant scores the pairs ``(i, j), i != j`` of valid (unmasked) tokens of each sequence,
gives one value per sequence and averages the values over the sequences of the batch.
Lower is more dispersed for every variant. Only ``torch`` is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import torch
import torch.nn.functional as F
from torch import Tensor

from condense.dispersion.variants import VARIANTS, Variant

__all__ = ["VARIANTS", "Variant", "DispersionLoss", "dispersion_loss"]

# Floor on token norms: a zero vector normalises to zero instead of NaN.
_NORM_EPS = 1e-8
# Added to each token's feature variance before the square root (as LayerNorm does).
_STD_EPS = 1e-6


class DispersionLoss(torch.nn.Module):
    r"""Dispersion regulariser for hidden states ``[B, L, F]`` (or a list of them, one per layer).

    With ``P`` the set of ordered pairs ``i != j`` of valid tokens of one sequence and
    ``c_ij`` the cosine similarity of tokens ``i`` and ``j``:

    - ``"angular_spread"`` (default): ``c`` is clamped to ``[-1 + t, 1 - t]`` (``t`` =
      ``clamp_margin``) with a straight-through gradient, ``D_ij = arccos(c_ij) / pi`` in
      ``[0, 1]``, and the loss is ``log mean_P exp(-D_ij / tau)``.
    - ``"decorrelation"``: each token is standardised over its features (zero mean, unit
      std), ``R = Z Z^T / F``, and the loss is ``mean_P R_ij^2``.
    - ``"l2_repel"``: ``log mean_P exp(-||z_i - z_j||^2 / tau)
      + l2_activation_weight * mean(z^2)`` (mean over valid tokens and features).
    - ``"orthogonalization"``: ``mean_P max(0, 1/2 - D_ij)^2`` with ``D`` as in
      ``"angular_spread"``.

    Padding never counts: masked tokens are zeroed before anything else (so even NaN there
    cannot leak), are never subsampled, and their pairs and activations are excluded.
    Sequences with fewer than 2 valid tokens are skipped; if all are, the loss is a zero
    that is still attached to the graph. When ``L > max_tokens``, ``max_tokens`` positions
    per sequence are drawn without replacement among the valid ones, from a CPU
    ``torch.Generator`` seeded with ``seed`` that advances with every call (for a list of
    layers, one draw serves every layer). The computation runs in float32 (float64 if the
    input is float64) with autocast disabled; the result is a float32 (float64) scalar.

    Args:
        variant: one of :data:`VARIANTS`. Default ``"angular_spread"``.
        tau: temperature of ``"angular_spread"`` and ``"l2_repel"``, > 0. Default 1.0.
        clamp_margin: ``t``, 0 <= t < 1; keeps ``arccos`` away from its infinite slope at
            ``+-1``. ``t = 0`` gives infinite gradients for identical or opposite tokens.
            Default 0.1.
        max_tokens: positions kept per sequence, >= 2, or ``None`` for all. Default 256.
        l2_activation_weight: weight of the mean squared activation in ``"l2_repel"``, >= 0.
            Default 0.1.
        seed: seed of the subsampling generator. Default 0.
    """

    def __init__(
        self,
        variant: Variant = "angular_spread",
        tau: float = 1.0,
        clamp_margin: float = 0.1,
        max_tokens: int | None = 256,
        l2_activation_weight: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0 <= clamp_margin < 1:
            raise ValueError(f"clamp_margin must satisfy 0 <= t < 1, got {clamp_margin}")
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 or None, got {max_tokens}")
        if not l2_activation_weight >= 0:
            raise ValueError(f"l2_activation_weight must be >= 0, got {l2_activation_weight}")
        self.variant = variant
        self.tau = tau
        self.clamp_margin = clamp_margin
        self.max_tokens = max_tokens
        self.l2_activation_weight = l2_activation_weight
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, tau={self.tau}, clamp_margin={self.clamp_margin}, "
            f"max_tokens={self.max_tokens}, l2_activation_weight={self.l2_activation_weight}, "
            f"seed={self.seed}"
        )

    def forward(self, hidden: Tensor | Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
        """Loss of ``hidden`` ``[B, L, F]``, or the mean over a list/tuple of such layers.

        ``mask`` ``[B, L]`` (bool or 0/1, e.g. an attention mask) marks valid tokens; ``None``
        means all are valid. Returns a scalar.
        """
        layers = list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
        if not layers:
            raise ValueError("hidden is an empty sequence of layers")
        for h in layers:
            if h.dim() != 3 or h.shape[:2] != layers[0].shape[:2]:
                raise ValueError(
                    f"every layer must be [B, L, F] with the same B and L, got "
                    f"{[tuple(x.shape) for x in layers]}"
                )
        batch, length = layers[0].shape[:2]
        device = layers[0].device
        if mask is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        elif mask.shape != (batch, length):
            raise ValueError(f"mask must be [B, L] = {(batch, length)}, got {tuple(mask.shape)}")
        else:
            valid = mask.to(device=device, dtype=torch.bool)
        index = self._subsample(valid)
        if index is not None:
            valid = valid.gather(1, index)
        return sum(self._layer_loss(h, valid, index) for h in layers) / len(layers)

    def _subsample(self, valid: Tensor) -> Tensor | None:
        """Positions ``[B, max_tokens]`` to keep, or ``None`` when every position is kept."""
        if self.max_tokens is None or valid.shape[1] <= self.max_tokens:
            return None
        # Random keys, invalid positions pushed past every valid one: the k smallest keys are a
        # uniform draw among valid positions (all of them if a sequence has fewer than k).
        keys = torch.rand(valid.shape, generator=self.generator).to(valid.device)
        keys = keys.masked_fill(~valid, 2.0)
        return keys.topk(self.max_tokens, dim=1, largest=False).indices

    def _layer_loss(self, hidden: Tensor, valid: Tensor, index: Tensor | None) -> Tensor:
        dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            x = hidden.to(dtype)
            if index is not None:
                x = x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            # Zeroing (not just excluding) padding: an excluded NaN/inf would still turn the
            # zero gradient of the matmuls into NaN.
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
            length = x.shape[1]
            eye = torch.eye(length, dtype=torch.bool, device=x.device)
            pairs = valid.unsqueeze(2) & valid.unsqueeze(1) & ~eye
            n_valid = valid.sum(1)
            ok = n_valid >= 2
            n_pairs = (n_valid * (n_valid - 1)).clamp_min(1).to(dtype)
            per_seq = getattr(self, f"_{self.variant}")(x, valid, pairs, n_pairs)
            return per_seq.where(ok, 0.0).sum() / ok.sum().clamp_min(1)

    def _angles(self, x: Tensor, pairs: Tensor) -> Tensor:
        """``D_ij = arccos(clamp(c_ij)) / pi`` in ``[0, 1]``, ``[B, L, L]``."""
        z = F.normalize(x, dim=-1, eps=_NORM_EPS)
        c = z @ z.transpose(1, 2)
        t = self.clamp_margin
        # Straight-through: the value is clamped, the gradient is that of c. arccos is evaluated
        # at the clamped value, so its slope stays finite.
        c = c + (c.clamp(-1 + t, 1 - t) - c).detach()
        # Excluded pairs (the diagonal is exactly 1) get a harmless 0, so that even with t = 0
        # no infinite slope meets their zero gradient (0 * inf = NaN).
        c = c.masked_fill(~pairs, 0.0)
        return torch.arccos(c) / math.pi

    def _log_mean_exp(self, a: Tensor, pairs: Tensor, n_pairs: Tensor) -> Tensor:
        """``log mean_P exp(a_ij)`` per sequence, ``[B]``, via logsumexp.

        A sequence without pairs gives -inf, which the caller drops; logsumexp's NaN gradient
        for it is zeroed by the backward of the masked_fill.
        """
        a = a.masked_fill(~pairs, -math.inf)
        return torch.logsumexp(a.flatten(1), dim=1) - n_pairs.log()

    def _angular_spread(self, x: Tensor, valid: Tensor, pairs: Tensor, n_pairs: Tensor) -> Tensor:
        return self._log_mean_exp(-self._angles(x, pairs) / self.tau, pairs, n_pairs)

    def _orthogonalization(
        self, x: Tensor, valid: Tensor, pairs: Tensor, n_pairs: Tensor
    ) -> Tensor:
        hinge = (0.5 - self._angles(x, pairs)).clamp_min(0.0).square()
        return hinge.where(pairs, 0.0).sum((1, 2)) / n_pairs

    def _decorrelation(self, x: Tensor, valid: Tensor, pairs: Tensor, n_pairs: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        z = (x - mean) / torch.sqrt(var + _STD_EPS)
        r = z @ z.transpose(1, 2) / x.shape[-1]
        return r.square().where(pairs, 0.0).sum((1, 2)) / n_pairs

    def _l2_repel(self, x: Tensor, valid: Tensor, pairs: Tensor, n_pairs: Tensor) -> Tensor:
        n_valid = valid.sum(1).clamp_min(1).to(x.dtype)
        # Distances ignore a shared offset; removing the sequence mean first keeps the Gram
        # formula below from cancelling catastrophically on large shared (outlier) features.
        centred = x - (x.sum(1, keepdim=True) / n_valid.view(-1, 1, 1))
        sq = centred.square().sum(-1)
        gram = centred @ centred.transpose(1, 2)
        d2 = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * gram).clamp_min(0)
        repel = self._log_mean_exp(-d2 / self.tau, pairs, n_pairs)
        activation = x.square().sum((1, 2)) / (n_valid * x.shape[-1])
        return repel + self.l2_activation_weight * activation


def dispersion_loss(
    hidden: Tensor | Sequence[Tensor],
    mask: Tensor | None = None,
    variant: Variant = "angular_spread",
    **kwargs: float | int | None,
) -> Tensor:
    """Functional form: ``DispersionLoss(variant, **kwargs)(hidden, mask)``.

    A fresh module is built on every call, so subsampling (``L > max_tokens``) draws the same
    positions each time for the same ``seed``; keep a module to get new draws per step.
    """
    return DispersionLoss(variant=variant, **kwargs)(hidden, mask)
