"""A model object and tokenizer already in memory, made ready for the probe without copying or moving it.

``from_memory(model, tokenizer)`` accepts any Hugging Face model object: a base model, one with an
LM or classification head, a PEFT-wrapped model, on any device or spread with ``device_map``, in
train or eval mode. It returns a :class:`LoadedModel` whose ``model`` is the object's own base
module (same parameters, no head, no copy) and whose ``info`` records what can be known about it
(class, config, parameter count, dtype, device) in place of a path.

``probing_mode(model)`` is the context to probe in: the model in eval mode and the random-number
generators forked, then every module's training flag and the generators restored exactly.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from condense.blocks import num_hidden_layers
from condense.errors import CondenseError
from condense.models.loading import LoadedModel

__all__ = ["from_memory", "probing_mode", "unwrap_model", "check_tokenizer", "model_facts"]

_HIDDEN_STATES_HELP = ("condense reads hidden states (output_hidden_states=True) of Hugging Face Transformer "
                       "models (transformers.PreTrainedModel)")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside ``model``: a PEFT wrapper's ``get_base_model()`` (adapter
    layers stay in it, active), a DataParallel/DDP wrapper's ``module``, else ``model`` itself.

    Raises CondenseError for prompt-learning PEFT adapters: their virtual tokens are added by
    the wrapper's forward, which the probe does not run.
    """
    while isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        prompt = [name for name, c in model.peft_config.items() if getattr(c, "is_prompt_learning", False)]
        if prompt:
            raise CondenseError(
                f"PEFT adapter {prompt[0]!r} is a prompt-learning adapter (virtual tokens), which the probe "
                "cannot apply; probe the base model, or use a weight adapter such as LoRA"
            )
        model = model.get_base_model()
    return model


def check_tokenizer(tokenizer: Any, model: torch.nn.Module) -> None:
    """CondenseError unless ``tokenizer`` can feed ``model``: it must be callable and produce no
    token id beyond the model's input-embedding rows (``len(tokenizer) <= rows``). A tokenizer
    with fewer than half as many tokens as there are rows is suspicious and warns."""
    if tokenizer is None:
        raise CondenseError("probing a model object needs its tokenizer: condense.probe(model, tokenizer=tok, ...)")
    if not callable(tokenizer) or not hasattr(tokenizer, "__len__"):
        raise CondenseError(f"tokenizer of type {type(tokenizer).__name__} is not a Hugging Face tokenizer; "
                            "pass the one from AutoTokenizer.from_pretrained")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    if weight is None:
        return
    rows, size = int(weight.shape[0]), len(tokenizer)
    if size > rows:
        raise CondenseError(
            f"the tokenizer has {size} tokens but the model's input embeddings have {rows} rows, so they do not "
            "belong together; pass the model's own tokenizer (or resize_token_embeddings after adding tokens)"
        )
    if size < rows / 2:
        warnings.warn(f"the tokenizer has {size} tokens for a model with {rows} embedding rows; "
                      "is it the model's own tokenizer?", stacklevel=3)


@contextlib.contextmanager
def probing_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode, with the random-number generators of the CPU and of the CUDA
    devices holding its parameters forked; on exit every module's ``training`` flag is set back
    to what it was (a train-mode model with some modules frozen in eval comes back exactly so),
    and forward hooks added meanwhile are removed. The probe removes its own hooks; transformers
    (5.x) installs output-capturing hooks on a model the first time hidden states are asked of
    it, and marks the model so: both are undone, so the model leaves with the hooks it came with.

    Nothing else is touched: no parameter moves, and ``requires_grad`` stays as it is.
    """
    modules = list(model.modules())
    flags = [module.training for module in modules]
    hooks = [(set(m._forward_hooks), set(m._forward_pre_hooks)) for m in modules]
    marks = [m.__dict__.get(_HOOKS_MARK, _ABSENT) for m in modules]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        model.eval()
        try:
            yield model
        finally:
            for module, flag, (post, pre), mark in zip(modules, flags, hooks, marks):
                module.training = flag
                _remove_hooks_except(module, post, pre)
                if mark is _ABSENT:
                    module.__dict__.pop(_HOOKS_MARK, None)
                else:
                    module.__dict__[_HOOKS_MARK] = mark


_HOOKS_MARK = "_output_capturing_hooks_installed"  # transformers' "hooks installed" flag
_ABSENT = object()


def _remove_hooks_except(module: torch.nn.Module, post: set[int], pre: set[int]) -> None:
    """Remove the forward (pre-)hooks of ``module`` whose handle ids are not in ``post`` (``pre``),
    from every dict a ``RemovableHandle.remove()`` would clear."""
    for key in [k for k in module._forward_hooks if k not in post]:
        for table in (module._forward_hooks, module._forward_hooks_with_kwargs, module._forward_hooks_always_called):
            table.pop(key, None)
    for key in [k for k in module._forward_pre_hooks if k not in pre]:
        for table in (module._forward_pre_hooks, module._forward_pre_hooks_with_kwargs):
            table.pop(key, None)


def model_facts(model: torch.nn.Module, inner: torch.nn.Module, core: torch.nn.Module) -> dict[str, Any]:
    """What run.json records about a model object: its class (and that of the module probed),
    config, parameter counts, dtype and device (or the device map's placement)."""
    config = inner.config
    params = list(model.parameters())
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params if p.is_floating_point()})
    devices = sorted({str(p.device) for p in params})
    facts: dict[str, Any] = {
        "source": "memory",
        "name_or_path": getattr(config, "_name_or_path", None) or None,
        "init": None,  # unknown: the weights were made elsewhere
        "architecture": (getattr(config, "architectures", None) or [type(inner).__name__])[0],
        "model_class": type(model).__name__,
        "probed_class": type(core).__name__,
        "model_type": getattr(config, "model_type", None),
        "num_layers": int(num_hidden_layers(core)),
        "hidden_size": _hidden_size(core),
        "parameters": int(sum(p.numel() for p in params)),
        "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "device": devices[0] if len(devices) == 1 else devices,
        "training_mode": bool(model.training),
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
    }
    if hasattr(inner, "hf_device_map"):
        placed = [str(d) for d in inner.hf_device_map.values()]
        facts["placement"] = {d: placed.count(d) for d in sorted(set(placed))}
    if model is not inner and hasattr(model, "peft_config"):
        facts["peft"] = {name: json.loads(json.dumps(c.to_dict(), default=str)) for name, c in model.peft_config.items()}
    return facts


def _hidden_size(model: torch.nn.Module) -> int:
    """Width of the hidden states: ``config.hidden_size`` (or ``n_embd``, or the text config's)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for cfg in (config, text):
        for key in ("hidden_size", "n_embd", "d_model"):
            if isinstance(getattr(cfg, key, None), int):
                return int(getattr(cfg, key))
    raise CondenseError(f"cannot tell the hidden size of {type(model).__name__} (no config.hidden_size); "
                        + _HIDDEN_STATES_HELP)


def from_memory(model: torch.nn.Module, tokenizer: Any, name: str | None = None,
                verify: bool = True) -> LoadedModel:
    """A :class:`LoadedModel` for probing the model object ``model`` with ``tokenizer``, in place.

    ``LoadedModel.model`` is ``model``'s own base module (``PreTrainedModel.base_model``, after
    unwrapping PEFT or DDP): the hidden states are those of the whole model, and its head is never
    run. ``name`` labels the run (default: the config's ``_name_or_path``, else the class name).
    Checks, each a CondenseError: ``model`` is a Hugging Face model with ``config.num_hidden_layers``;
    the tokenizer fits its vocabulary (:func:`check_tokenizer`); a two-token forward pass in eval
    mode returns ``num_hidden_layers + 1`` hidden states of the model's width (``verify=False``
    skips this forward pass, for a model already verified).
    """
    if not isinstance(model, torch.nn.Module):
        raise CondenseError(f"model of type {type(model).__name__} is neither a model name nor a torch.nn.Module; "
                            "pass a name or path as a string, or a Hugging Face model object")
    inner = unwrap_model(model)
    if getattr(inner, "config", None) is None or not isinstance(num_hidden_layers(inner), int):
        raise CondenseError(f"model {type(inner).__name__} has no config.num_hidden_layers: {_HIDDEN_STATES_HELP}")
    core = getattr(inner, "base_model", inner)  # the model without its head (itself for a base model)
    check_tokenizer(tokenizer, core)
    facts = model_facts(model, inner, core)
    if verify:
        _check_hidden_states(core, tokenizer, facts["num_layers"], facts["hidden_size"])
    label = name or facts["name_or_path"] or type(inner).__name__
    tokenizer_facts = {"tokenizer_source": getattr(tokenizer, "name_or_path", None) or None,
                       "tokenizer_class": type(tokenizer).__name__, "tokenizer_size": len(tokenizer)}
    return LoadedModel(core, tokenizer, {"model": label, **facts, **tokenizer_facts})


def _check_hidden_states(core: torch.nn.Module, tokenizer: Any, n_layers: int, width: int) -> None:
    """One forward pass of two tokens: does the model return the hidden states the probe reads?"""
    ids = list(tokenizer("condensation probe", add_special_tokens=False)["input_ids"])[:2] or [0, 0]
    device = core.get_input_embeddings().weight.device
    device = torch.device("cpu") if device.type == "meta" else device  # disk-offloaded weights run on the CPU
    ids_t = torch.tensor([ids], device=device)
    with probing_mode(core), torch.inference_mode():
        try:
            out = core(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True)
        except TypeError as err:
            raise CondenseError(f"model {type(core).__name__} cannot return hidden states ({err}); "
                                + _HIDDEN_STATES_HELP) from None
    states = getattr(out, "hidden_states", None)
    if states is None and isinstance(out, tuple):
        states = next((o for o in out if isinstance(o, tuple) and len(o) == n_layers + 1), None)
    if (not isinstance(states, (tuple, list)) or len(states) != n_layers + 1
            or any(getattr(s, "shape", (None,))[-1] != width for s in states)):
        found = "none" if not isinstance(states, (tuple, list)) else f"{len(states)} entries"
        raise CondenseError(f"model {type(core).__name__} returns no usable hidden states (expected "
                            f"{n_layers + 1} entries of width {width}, got {found}); " + _HIDDEN_STATES_HELP)
