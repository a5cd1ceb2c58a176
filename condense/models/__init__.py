"""Where a model comes from: offline aliases, local checkpoints, the hub, shipped configs.

``load_model(name, ...)`` returns a :class:`LoadedModel` (base model, tokenizer, the facts
run.json records); ``resolve_source``, ``load_config`` and ``load_tokenizer`` are its steps, for
callers (such as training) that need a model resolved without its weights. ``from_memory(model,
tokenizer)`` does the same for a model object already in memory, probed in place.
"""

from condense.models.aliases import ALIAS_HINT, ALIASES, Alias, alias_location
from condense.models.loading import (
    LoadedModel,
    first_line,
    hub_reachable,
    load_config,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_source,
    shipped_configs,
)
from condense.models.memory import check_tokenizer, from_memory, model_facts, probing_mode, unwrap_model

__all__ = ["Alias", "ALIASES", "ALIAS_HINT", "alias_location", "LoadedModel", "load_model", "resolve_source",
           "load_config", "load_tokenizer", "resolve_device", "resolve_dtype", "hub_reachable", "shipped_configs",
           "first_line", "from_memory", "probing_mode", "unwrap_model", "check_tokenizer", "model_facts"]
