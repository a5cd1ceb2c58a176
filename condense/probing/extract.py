"""Read the selected hidden-state entries of one batch from a Hugging Face model.

Entry 0 is the embedding output and entry k the output of block k, exactly as
``output_hidden_states`` orders them (the paper's convention), so results match the authors'.
"""

from __future__ import annotations

import torch

__all__ = ["HiddenStateReader", "find_blocks"]


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of Transformer blocks: the first ModuleList as long as its layer count."""
    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    return None


class HiddenStateReader:
    """Runs the model without gradients and returns ``{entry index: [B, S, D] tensor}``.

    ``last_entry_after_final_norm`` is found on the first batch by comparing the last entry with
    the raw output of the last block (True for GPT-2/Llama/Qwen-style decoders, False for BERT).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.n_entries = int(model.config.num_hidden_layers) + 1
        self.last_entry_after_final_norm: bool | None = None
        self._blocks = find_blocks(model)

    @property
    def input_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @torch.inference_mode()
    def read(self, ids: torch.Tensor, attention: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = None
        if self.last_entry_after_final_norm is None and self._blocks is not None:
            handle = self._blocks[-1].register_forward_hook(
                lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
            )
        try:
            out = self.model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True)
        finally:
            if handle is not None:
                handle.remove()
        states = out.hidden_states
        if len(states) != self.n_entries:
            raise RuntimeError(f"model returned {len(states)} hidden states, expected {self.n_entries}")
        if captured:
            self.last_entry_after_final_norm = not torch.equal(captured[0], states[-1])
        return {i: states[i] for i in layers}
