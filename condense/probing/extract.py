"""Read the selected hidden-state entries of one batch from a Hugging Face model, one layer at a time.

Entry 0 is the embedding output and entry k the output of block k, exactly as
``output_hidden_states`` orders them (the paper's convention), so results match the authors'.
Forward hooks hand each selected entry to a ``consume(entry, hidden)`` callback the moment its
block has run, so only one selected layer is alive besides the model's own activations
(``output_hidden_states`` keeps every layer of the batch), and the forward pass stops after the
deepest one. The hooks are verified once against ``output_hidden_states``: on the first batch
itself when every entry of it fits ``VERIFY_HOLD_BYTES`` and the deepest entry is selected (that
batch is then read from ``output_hidden_states``, so the check costs no forward pass of its own),
else on a short prefix of the first sequence (the mapping of modules to entries does not depend on
the length). A model whose hooks do not reproduce it exactly is read with ``output_hidden_states``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from condense.blocks import find_blocks, num_hidden_layers

__all__ = ["HiddenStateReader", "VERIFY_TOKENS", "VERIFY_HOLD_BYTES"]

VERIFY_TOKENS = 32  # tokens of the first sequence that the one-off hook verification runs on
VERIFY_HOLD_BYTES = 512 << 20  # a first batch whose every entry (float32) fits this is verified in place

class _StopForward(Exception):
    """Raised by a hook once the deepest selected entry is captured: the rest of the forward is waste."""


def _output_hook(take: Callable[[torch.Tensor], None]) -> Callable:
    """A forward hook handing a module's output tensor (the first item of a tuple) to ``take``."""

    def hook(_module, _inputs, out):
        take(out[0] if isinstance(out, tuple) else out)

    return hook


class HiddenStateReader:
    """Runs the model without gradients and hands ``consume(entry, [B, S, D] tensor)`` each selected entry.

    ``last_entry_after_final_norm`` is found by the verification by comparing the last entry with
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
        # a probe needs no key/value cache: skip building it where the model lets us say so
        self._extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    @property
    def input_device(self) -> torch.device:
        device = self.model.get_input_embeddings().weight.device
        # disk-offloaded weights sit on "meta"; accelerate's hooks run them on the CPU
        return torch.device("cpu") if device.type == "meta" else device

    @torch.inference_mode()
    def read(self, ids: torch.Tensor, attention: torch.Tensor, layers: list[int],
             consume: Callable[[int, torch.Tensor], None]) -> None:
        """Forward one batch (ids, attention [B, S]); ``consume(i, hidden)`` for each entry of
        ``layers`` in increasing order, inside the forward pass when reading with hooks."""
        layers = sorted(layers)
        if self.method is None and self._blocks is None:
            self.method = "hidden_states"
        # a separate check's extra forward pass reads every weight once more: seconds for a large model
        if self.method is None and layers[-1] == self.n_entries - 1 and self._all_entries_bytes(ids) <= VERIFY_HOLD_BYTES:
            states = self._verify(ids, attention)
        else:
            if self.method is None:
                self._verify(ids[:1, :VERIFY_TOKENS], attention[:1, :VERIFY_TOKENS])
            if self.method == "hooks":
                self._hooked_forward(ids, attention, layers, consume)
                return
            states = self._full_forward(ids, attention)
        for i in layers:
            consume(i, states[i])

    def _all_entries_bytes(self, ids: torch.Tensor) -> int:
        width = getattr(self.model.config, "hidden_size", None) or self.model.get_input_embeddings().weight.shape[1]
        return ids.numel() * int(width) * 4 * self.n_entries

    def _full_forward(self, ids, attention) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True, **self._extra)
        states = out.hidden_states
        if len(states) != self.n_entries:
            raise RuntimeError(f"model returned {len(states)} hidden states, expected {self.n_entries}")
        return states

    def _verify(self, ids, attention) -> tuple[torch.Tensor, ...]:
        """Forward ids with every candidate hook attached: decide the method and the final norm.
        Returns that forward pass's ``hidden_states``."""
        candidates = self._final_norm_candidates()
        captured: dict[str, torch.Tensor] = {}
        handles = [self._capture_entry(i, self._store(captured, str(i))) for i in range(self.n_entries - 1)]
        handles += [m.register_forward_hook(_output_hook(self._store(captured, f"norm:{name}")))
                    for name, m in candidates.items()]
        handles.append(self._blocks[-1].register_forward_hook(_output_hook(self._store(captured, "last_block"))))
        try:
            states = self._full_forward(ids, attention)
        finally:
            for h in handles:
                h.remove()
        self.last_entry_after_final_norm = not torch.equal(captured["last_block"], states[-1])
        if self.last_entry_after_final_norm:
            self._final_norm = next((candidates[k[5:]] for k in captured
                                     if k.startswith("norm:") and torch.equal(captured[k], states[-1])), None)
        hooks_ok = all(torch.equal(captured.get(str(i), torch.empty(0)), states[i]) for i in range(self.n_entries - 1))
        hooks_ok &= self._final_norm is not None or not self.last_entry_after_final_norm
        self.method = "hooks" if hooks_ok else "hidden_states"
        return states

    def _final_norm_candidates(self) -> dict[str, torch.nn.Module]:
        return {name: m for name, m in self.model.named_modules()
                if "norm" in type(m).__name__.lower() and not name.startswith(self._blocks_prefix())}

    def _blocks_prefix(self) -> str:
        return next(name for name, m in self.model.named_modules() if m is self._blocks) + "."

    @staticmethod
    def _store(captured: dict, key: str) -> Callable[[torch.Tensor], None]:
        def store(hidden: torch.Tensor) -> None:
            captured[key] = hidden

        return store

    def _capture_entry(self, i: int, take: Callable[[torch.Tensor], None]):
        """Hook handing entry i to ``take``: entry 0 is the input of block 0, entry i >= 1 the output of block i - 1."""
        if i == 0:
            def pre_hook(_module, args, kwargs):
                take(args[0] if args else kwargs["hidden_states"])

            return self._blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
        return self._blocks[i - 1].register_forward_hook(_output_hook(take))

    def _hooked_forward(self, ids, attention, layers: list[int], consume) -> None:
        deepest = layers[-1]
        last = self.n_entries - 1
        handles = []
        for i in layers:
            def take(hidden: torch.Tensor, i: int = i) -> None:
                consume(i, hidden)
                if i == deepest:
                    raise _StopForward

            if i == last and self.last_entry_after_final_norm:
                handles.append(self._final_norm.register_forward_hook(_output_hook(take)))
            else:
                handles.append(self._capture_entry(i, take))
        try:
            self.model(input_ids=ids, attention_mask=attention.long(), **self._extra)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
