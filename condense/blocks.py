"""Locate a Hugging Face model's list of Transformer blocks (torch only: used by probing and training)."""

from __future__ import annotations

import torch

__all__ = ["find_blocks", "num_hidden_layers"]


def num_hidden_layers(model: torch.nn.Module) -> int | None:
    """``config.num_hidden_layers``, or that of the text config of a multimodal model."""
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None)
    if n_layers is None and hasattr(config, "get_text_config"):
        n_layers = getattr(config.get_text_config(), "num_hidden_layers", None)
    return n_layers


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's Transformer blocks: the first ``torch.nn.ModuleList`` (in module order) whose
    length equals ``model.config.num_hidden_layers`` (or that of its text config).

    Raises ``ValueError`` naming the model class if there is no such list.
    """
    n_layers = num_hidden_layers(model)
    if n_layers is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
                return module
    raise ValueError(
        f"cannot find the Transformer blocks of {type(model).__name__}: no torch.nn.ModuleList "
        f"of length config.num_hidden_layers ({n_layers})"
    )
