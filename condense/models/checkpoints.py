"""What a local checkpoint holds, and what is wrong with one that is there but broken.

A found-but-broken checkpoint (config.json that is not JSON, a truncated or foreign .gguf, a
folder with a config and no weights) gets a message about that file; "cannot find" stays for
what is really absent. GGUF metadata (the checkpoint's own name, its quantisation) is read from
the file's header alone, with the ``gguf`` package's type tables.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.models.gguf_header import read_gguf_header

__all__ = ["GGUF_MAGIC", "WEIGHT_PATTERNS", "read_gguf_facts", "check_config_json", "check_weights",
           "checkpoint_name"]

GGUF_MAGIC = b"GGUF"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack",
                   "*.safetensors.index.json", "*.bin.index.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def read_gguf_facts(path: str | Path) -> dict[str, Any]:
    """The metadata of a GGUF file that run.json records; CondenseError when it is not a whole GGUF file.

    Returns ``{"name": general.name or None, "architecture": general.architecture,
    "quantization": "Q4_K_M" (general.file_type without its MOSTLY_ prefix; without that key, the
    commonest non-float tensor type), "tensor_types": {type: count}, "parameters": elements of all
    tensors, "header_bytes": where the tensor data starts}``. Only the header's scalar keys and tensor
    table are read (:mod:`condense.models.gguf_header`), and the result is cached per (path, size,
    modification time).
    """
    path = Path(path)
    try:
        stat = path.stat()
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise CondenseError(f"cannot read {str(path)!r} ({err.strerror})") from None
    if magic != GGUF_MAGIC:
        raise CondenseError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
                            "give a .gguf checkpoint or a checkpoint folder")
    return dict(_gguf_facts(str(path.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _gguf_facts(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, Any], ...]:
    try:
        import gguf
    except ImportError:
        raise CondenseError(f"reading {path!r} needs the gguf package: pip install 'condense[gguf]'") from None
    try:
        header = read_gguf_header(path)
    except Exception as err:  # a cut header or tensor data fails in many ways (struct.error, ValueError, ...)
        raise CondenseError(f"{path!r} is a truncated or corrupt GGUF file ({size} bytes; the GGUF reader "
                            f"stopped with {type(err).__name__}: {str(err)[:80]}); copy or assemble it again") from None
    field = header.metadata.get
    tensor_types = Counter(gguf.GGMLQuantizationType(t.ggml_type).name for t in header.tensors)
    file_type = field("general.file_type")
    try:
        quantization = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        quantized = [name for name, _ in tensor_types.most_common() if name not in ("F32", "F16", "BF16")]
        quantization = quantized[0] if quantized else (tensor_types.most_common(1)[0][0] if tensor_types else None)
    return (("name", field("general.name")), ("architecture", field("general.architecture")),
            ("quantization", quantization), ("tensor_types", dict(sorted(tensor_types.items()))),
            ("parameters", sum(t.elements for t in header.tensors)), ("header_bytes", header.data_start))


def check_config_json(folder: str | Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint folder; CondenseError naming the file when it is not a JSON object."""
    file = Path(folder) / "config.json"
    try:
        facts = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CondenseError(f"{str(file)!r} is not text (a binary or corrupt file); replace it with the "
                            "checkpoint's config.json") from None
    except json.JSONDecodeError as err:
        raise CondenseError(f"{str(file)!r} is broken JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                            "repair it or copy the checkpoint's config.json again") from None
    except OSError as err:
        raise CondenseError(f"cannot read {str(file)!r} ({err.strerror})") from None
    if not isinstance(facts, dict):
        raise CondenseError(f"{str(file)!r} holds a JSON {type(facts).__name__}, not the object of a model config")
    return facts


def check_weights(folder: str | Path) -> None:
    """CondenseError when a checkpoint folder with a config holds no weight file."""
    folder = Path(folder)
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise CondenseError(f"checkpoint folder {str(folder)!r} has a config.json but no weights (no .safetensors "
                            "or .bin file); copy the weights beside it, or use --init random for the architecture "
                            "with fresh weights")


def checkpoint_name(source: str, gguf_facts: dict[str, Any] | None, config_facts: dict[str, Any] | None) -> str:
    """The checkpoint's own name: GGUF ``general.name``, else a hub-style ``_name_or_path`` of its
    config, else the file's or folder's name (or the hub id's last part)."""
    if gguf_facts and gguf_facts.get("name"):
        return str(gguf_facts["name"])
    recorded = str((config_facts or {}).get("_name_or_path") or "")
    if recorded and _HUB_ID.fullmatch(recorded) and not os.path.exists(recorded):
        return recorded
    return Path(source.rstrip("/")).name or source
