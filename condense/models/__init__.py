"""Where a model comes from: offline aliases, local checkpoints, the hub, shipped configs.

``load_model(name, ...)`` returns a :class:`LoadedModel` (base model, tokenizer, the facts
run.json records); ``resolve_source``, ``load_config`` and ``load_tokenizer`` are its steps, for
callers (such as training) that need a model resolved without its weights. ``from_memory(model,
tokenizer)`` does the same for a model object already in memory, probed in place. ``ALIASES`` is
the table of offline checkpoints; ``locate_alias`` assembles a split one into the cache on first
use and ``alias_report`` says what is installed (``condense models``). ``convert_gguf`` keeps the
conversion of a GGUF file in the cache (:mod:`condense.models.gguf_cache`). The loaders, which
need torch, are imported on first use.
"""

from typing import TYPE_CHECKING

from condense.errors import first_line
from condense.lazy import lazy_exports
from condense.models.aliases import ALIAS_HINT, ALIASES, Alias, Part, alias_location, install_command
from condense.models.assembly import (
    CACHE_ENV,
    alias_report,
    assemble,
    assembled_folder,
    cache_dir,
    cache_usage,
    clear_cache,
    is_assembled,
    locate_alias,
    part_status,
)
from condense.models.checkpoints import check_config_json, check_weights, read_gguf_facts
from condense.models.gguf_cache import ConvertedGguf, convert_gguf, converted_files_folder

if TYPE_CHECKING:  # imported on first use: they need torch
    from condense.models.loading import (LoadedModel, checkpoint_facts, converted_gguf, hub_reachable, hub_revision,
                                         load_config, load_model, load_tokenizer, resolve_device, resolve_dtype, resolve_source,
                                         shipped_configs)
    from condense.models.memory import check_tokenizer, from_memory, model_facts, probing_mode, unwrap_model

__all__ = ["Alias", "Part", "ALIASES", "ALIAS_HINT", "alias_location", "install_command", "CACHE_ENV", "cache_dir",
           "assembled_folder", "part_status", "is_assembled", "assemble", "locate_alias", "alias_report",
           "read_gguf_facts", "check_config_json", "check_weights", "LoadedModel", "load_model", "resolve_source",
           "checkpoint_facts", "load_config", "load_tokenizer", "resolve_device", "resolve_dtype", "hub_reachable", "hub_revision",
           "shipped_configs", "first_line", "from_memory", "probing_mode", "unwrap_model", "check_tokenizer",
           "model_facts", "convert_gguf", "ConvertedGguf", "converted_gguf", "cache_usage", "clear_cache",
           "converted_files_folder"]

lazy_exports(__name__, {
    "condense.models.loading": ("LoadedModel", "checkpoint_facts", "converted_gguf", "hub_reachable", "hub_revision", "load_config",
                                "load_model", "load_tokenizer", "resolve_device", "resolve_dtype", "resolve_source",
                                "shipped_configs"),
    "condense.models.memory": ("check_tokenizer", "from_memory", "model_facts", "probing_mode", "unwrap_model"),
})
