"""Load a causal LM (with its LM head) for training, from the same sources the probe accepts.

The probe's loader returns the base model; training needs ``AutoModelForCausalLM``. Source
resolution, configs (shipped random-init configs included), tokenizers and devices are shared
with :mod:`condense.models`. GGUF checkpoints load as their float32 conversion from the cache
(:mod:`condense.models.gguf_cache`), plain weights, so the model trains and ``save_pretrained`` works.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from condense import hub
from condense.errors import CondenseError
from condense.models import (
    ALIAS_HINT,
    LoadedModel,
    converted_gguf,
    first_line,
    hub_revision,
    load_config,
    load_tokenizer,
    resolve_source,
)

__all__ = ["CausalSource", "resolve_causal_source", "load_causal_lm", "probe_view"]


@dataclass
class CausalSource:
    """A model resolved up to (not including) its weights: config and tokenizer are loaded.

    ``kwargs`` are the ``from_pretrained`` arguments of ``weights``, the folder or hub id the weights
    load from: ``source`` itself, or for a GGUF file its float32 conversion in the cache. For a hub
    model they pin ``revision`` to the ``commit`` the asked ``revision`` resolved to.
    """

    name: str
    source: str
    gguf: str | None
    hub_id: str | None
    init: str
    config: Any
    config_note: str
    tokenizer: Any
    tokenizer_note: str
    kwargs: dict[str, Any]
    weights: str = ""
    revision: str | None = None
    commit: str | None = None

    def hub_calls(self):
        """The hub's failures as one line while loading from it (a no-op for local checkpoints)."""
        return contextlib.nullcontext() if os.path.exists(self.weights) else hub.hub_calls(_what(self.name, self.revision))


def _what(name: str, revision: str | None) -> str:
    return f"model {name!r}" + (f" at revision {revision!r}" if revision else "")


def resolve_causal_source(name: str, init: str = "pretrained", trust_remote_code: bool = False,
                          revision: str | None = None) -> CausalSource:
    """Resolve ``name`` (alias, folder, .gguf, shipped config or hub id; ``revision``: a hub
    branch, tag or commit) and load config and tokenizer, from one commit.

    Cheap (no weights), so callers can validate settings against the architecture first.
    """
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    source, gguf, hub_id = resolve_source(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    commit = None if os.path.exists(source) else hub_revision(source, revision, _what(name, revision), kwargs, init)
    src = CausalSource(name, source, gguf, hub_id, init, None, "", None, "", kwargs, source, revision, commit)
    with src.hub_calls():
        if gguf and init == "pretrained":  # parsed and dequantised once, ever: the cache's float32 conversion
            src.weights = str(converted_gguf(name, source, gguf, kwargs, torch.float32).folder)
            src.kwargs = {"trust_remote_code": trust_remote_code}
        src.config, src.config_note = load_config(name, src.weights, src.kwargs, init)
        if not hasattr(src.config, "num_hidden_layers") or getattr(src.config, "is_encoder_decoder", False):
            raise CondenseError(f"{name!r} ({src.config.model_type}) is not a decoder-only causal LM; finetune needs one")
        src.tokenizer, src.tokenizer_note = load_tokenizer(src.weights, src.kwargs, init)
    if src.weights != source:
        src.config_note = src.tokenizer_note = source
    return src


def load_causal_lm(src: CausalSource, device: torch.device, seed: int = 0) -> LoadedModel:
    """The float32 ``AutoModelForCausalLM`` of ``src`` on ``device``, in training mode.

    ``src.init == "random"`` builds the architecture with weights drawn after
    ``torch.manual_seed(seed)``. ``info`` holds the facts a probe's run.json records.
    """
    from transformers import AutoModelForCausalLM

    try:
        if src.init == "random":
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(src.config, trust_remote_code=src.kwargs["trust_remote_code"])
        else:  # a GGUF's weights come unpacked from the cache: packed weights neither train nor save
            with src.hub_calls():
                model = AutoModelForCausalLM.from_pretrained(src.weights, config=src.config, dtype=torch.float32,
                                                             **src.kwargs)
    except (OSError, ValueError) as err:
        raise CondenseError(
            f"cannot load {src.name!r} as a causal LM ({first_line(err)}){ALIAS_HINT}"
        ) from None
    model = model.float().to(device)
    model.train()
    config = model.config
    info = {
        "model": src.name,
        "resolved": src.source if not src.gguf else os.path.join(src.source, src.gguf),
        "gguf_cache": src.weights if src.weights != src.source else None,
        "hub_id": src.hub_id,
        "revision": src.revision,
        "commit": src.commit,
        "init": src.init,
        "init_seed": seed if src.init == "random" else None,
        "config_source": src.config_note,
        "tokenizer_source": src.tokenizer_note,
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "model_class": type(model).__name__,
        "model_type": config.model_type,
        "num_layers": int(config.num_hidden_layers),
        "hidden_size": int(getattr(config, "hidden_size", None) or getattr(config, "n_embd")),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": "float32",
        "device": str(device),
    }
    return LoadedModel(model, src.tokenizer, info)


def probe_view(loaded: LoadedModel, step: int) -> LoadedModel:
    """The base model (no LM head) of a training model, labelled for the probe's run.json."""
    info = {**loaded.info, "model": f"{loaded.info['model']}@step{step}", "training_step": step}
    return LoadedModel(loaded.model.base_model, loaded.tokenizer, info)
