"""Forward hooks that collect Transformer block outputs for the dispersion loss during training.

The blocks are found generically, so any model whose ``config.num_hidden_layers`` matches a
``torch.nn.ModuleList`` works; only the chosen blocks' outputs are kept (no
``output_hidden_states``, which would also keep the embedding output and every other layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import torch

from condense.blocks import find_blocks
from torch import Tensor

from .losses import DispersionLoss

__all__ = ["Where", "DispersionHook", "attach_dispersion", "find_blocks", "select_blocks"]

Where = Literal["all", "last", "early_half", "late_half"] | Sequence[int]


def select_blocks(n_blocks: int, where: Where) -> list[int]:
    """Indices of the blocks to regularise among ``n_blocks``.

    ``"all"``: every block; ``"last"``: the last; ``"early_half"``: the first ``n_blocks // 2``;
    ``"late_half"``: the rest; a sequence of ints: those blocks (negative counts from the end),
    each in range and none repeated.
    """
    if isinstance(where, str):
        half = n_blocks // 2
        choices = {
            "all": range(n_blocks),
            "last": range(n_blocks - 1, n_blocks),
            "early_half": range(half),
            "late_half": range(half, n_blocks),
        }
        if where not in choices:
            raise ValueError(
                f"where must be one of {sorted(choices)} or a list of ints, got {where!r}"
            )
        indices = list(choices[where])
        if not indices:
            raise ValueError(f"where={where!r} selects no block of {n_blocks}")
        return indices
    indices = []
    for i in where:
        if not isinstance(i, int) or isinstance(i, bool) or not -n_blocks <= i < n_blocks:
            raise ValueError(f"block index {i!r} is not an int in [-{n_blocks}, {n_blocks})")
        indices.append(i % n_blocks)
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"where must name at least one block, none twice, got {list(where)}")
    return indices


class DispersionHook:
    """Collects the outputs of chosen blocks of ``model`` and turns them into a dispersion loss.

    Forward hooks on the chosen blocks keep each block's output (its first element if a tuple),
    with its graph, while the block is in training mode (always if ``only_in_training`` is
    False). A pre-hook on ``model`` clears them at the start of each forward, so :meth:`loss`
    sees the latest forward only. Use as a context manager, or call :meth:`remove`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        where: Where = "all",
        loss: DispersionLoss | None = None,
        only_in_training: bool = True,
    ) -> None:
        self.model = model
        blocks = find_blocks(model)
        self.indices = select_blocks(len(blocks), where)
        self.loss_fn = loss if loss is not None else DispersionLoss()
        self.only_in_training = only_in_training
        self._outputs: list[Tensor] = []
        self._handles = [model.register_forward_pre_hook(self._clear)]
        self._handles += [blocks[i].register_forward_hook(self._collect) for i in self.indices]

    def _clear(self, module: torch.nn.Module, args: Any) -> None:
        self._outputs.clear()

    def _collect(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training or not self.only_in_training:
            self._outputs.append(output[0] if isinstance(output, tuple) else output)

    @property
    def num_collected(self) -> int:
        """Number of block outputs held from the latest forward."""
        return len(self._outputs)

    def loss(self, attention_mask: Tensor | None = None) -> Tensor:
        """Mean dispersion over the hooked blocks of the latest forward, then forget them.

        ``attention_mask`` ``[B, L]`` marks the valid tokens. Raises ``RuntimeError`` if nothing
        was collected (no forward since the last call, or the model was in eval mode).
        """
        if not self._outputs:
            raise RuntimeError(
                "no block outputs collected: run a forward pass (in training mode unless "
                "only_in_training=False) before calling loss()"
            )
        outputs, self._outputs = self._outputs, []
        return self.loss_fn(outputs, attention_mask)

    def remove(self) -> None:
        """Remove every hook and drop the collected outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def __enter__(self) -> DispersionHook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def attach_dispersion(
    model: torch.nn.Module,
    where: Where = "all",
    loss: DispersionLoss | None = None,
    only_in_training: bool = True,
) -> DispersionHook:
    """Hook the blocks of ``model`` chosen by ``where`` (see :func:`select_blocks`).

    Returns a :class:`DispersionHook`, usable as ``with attach_dispersion(model) as hook:``
    (hooks removed on exit) or kept and removed with ``hook.remove()``. ``loss`` defaults to
    ``DispersionLoss()`` (angular spread).
    """
    return DispersionHook(model, where, loss, only_in_training)
