"""Read the selected hidden-state entries of one batch from a Hugging Face model.

Entry 0 is the embedding output and entry k the output of block k, exactly as
``output_hidden_states`` orders them (the paper's convention), so results match the authors'.
Forward hooks capture only the selected entries (``output_hidden_states`` would keep every
layer of the batch alive) and the forward pass stops after the deepest one. The hooks are
verified against ``output_hidden_states`` on the first batch; a model whose hooks do not
reproduce it exactly falls back to ``output_hidden_states`` for the whole run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from condense.blocks import find_blocks, num_hidden_layers

__all__ = ["HiddenStateReader"]


class _StopForward(Exception):
    """Raised by a hook once the deepest selected entry is captured: the rest of the forward is waste."""


def _output_tensor(out):
    return out[0] if isinstance(out, tuple) else out


class HiddenStateReader:
    """Runs the model without gradients and returns ``{entry index: [B, S, D] tensor}``.

    ``last_entry_after_final_norm`` is found on the first batch by comparing the last entry with
    the raw output of the last block (True for GPT-2/Llama/Qwen-style decoders, False for BERT).
    ``method`` is ``"hooks"`` once verified, ``"hidden_states"`` when falling back.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.n_entries = int(num_hidden_layers(model)) + 1
        self.last_entry_after_final_norm: bool | None = None
        self.method: str | None = None
        try:
            self._blocks: torch.nn.ModuleList | None = find_blocks(model)
        except ValueError:
            self._blocks = None
        self._final_norm: torch.nn.Module | None = None

    @property
    def input_device(self) -> torch.device:
        device = self.model.get_input_embeddings().weight.device
        # disk-offloaded weights sit on "meta"; accelerate's hooks run them on the CPU
        return torch.device("cpu") if device.type == "meta" else device

    @torch.inference_mode()
    def read(self, ids: torch.Tensor, attention: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        if self.method is None:
            return self._first_read(ids, attention, layers)
        if self.method == "hooks":
            return self._hooked_forward(ids, attention, layers, stop_early=True)
        return self._full_forward(ids, attention, layers)

    def _full_forward(self, ids, attention, layers) -> dict[int, torch.Tensor]:
        out = self.model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True)
        states = out.hidden_states
        if len(states) != self.n_entries:
            raise RuntimeError(f"model returned {len(states)} hidden states, expected {self.n_entries}")
        return {i: states[i] for i in layers}

    def _first_read(self, ids, attention, layers) -> dict[int, torch.Tensor]:
        """Full forward with every candidate hook attached: decide the method and the final norm."""
        if self._blocks is None:
            self.method = "hidden_states"
            return self._full_forward(ids, attention, layers)
        candidates = self._final_norm_candidates()
        captured: dict[str, torch.Tensor] = {}
        handles = [self._capture_entry(i, captured, str(i)) for i in range(self.n_entries - 1)]
        handles += [m.register_forward_hook(self._store(captured, f"norm:{name}"))
                    for name, m in candidates.items()]
        handles.append(self._blocks[-1].register_forward_hook(self._store(captured, "last_block")))
        try:
            out = self.model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True)
        finally:
            for h in handles:
                h.remove()
        states = out.hidden_states
        if len(states) != self.n_entries:
            raise RuntimeError(f"model returned {len(states)} hidden states, expected {self.n_entries}")
        self.last_entry_after_final_norm = not torch.equal(captured["last_block"], states[-1])
        if self.last_entry_after_final_norm:
            self._final_norm = next((candidates[k[5:]] for k in captured
                                     if k.startswith("norm:") and torch.equal(captured[k], states[-1])), None)
        hooks_ok = all(torch.equal(captured.get(str(i), torch.empty(0)), states[i]) for i in range(self.n_entries - 1))
        hooks_ok &= self._final_norm is not None or not self.last_entry_after_final_norm
        self.method = "hooks" if hooks_ok else "hidden_states"
        return {i: states[i] for i in layers}

    def _final_norm_candidates(self) -> dict[str, torch.nn.Module]:
        return {name: m for name, m in self.model.named_modules()
                if "norm" in type(m).__name__.lower() and not name.startswith(self._blocks_prefix())}

    def _blocks_prefix(self) -> str:
        return next(name for name, m in self.model.named_modules() if m is self._blocks) + "."

    @staticmethod
    def _store(captured: dict, key: str, stop_after: bool = False) -> Callable:
        def hook(_module, _inputs, out):
            captured[key] = _output_tensor(out)
            if stop_after:
                raise _StopForward

        return hook

    def _capture_entry(self, i: int, captured: dict, key: str, stop_after: bool = False):
        """Entry 0 is the input of block 0; entry i >= 1 the output of block i - 1."""
        if i == 0:
            def pre_hook(_module, args, kwargs):
                captured[key] = args[0] if args else kwargs["hidden_states"]
                if stop_after:
                    raise _StopForward

            return self._blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
        return self._blocks[i - 1].register_forward_hook(self._store(captured, key, stop_after))

    def _hooked_forward(self, ids, attention, layers, stop_early: bool) -> dict[int, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        deepest = max(layers)
        last = self.n_entries - 1
        handles = []
        for i in layers:
            stop = stop_early and i == deepest
            if i == last and self.last_entry_after_final_norm:
                handles.append(self._final_norm.register_forward_hook(self._store(captured, str(i), stop)))
            else:
                handles.append(self._capture_entry(i, captured, str(i), stop))
        try:
            self.model(input_ids=ids, attention_mask=attention.long())
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return {i: captured[str(i)] for i in layers}
