"""The GGUF conversion cache: a .gguf checkpoint is parsed and dequantised once, ever.

transformers makes a model of a GGUF file by parsing it three times (config, tokenizer, weights),
each parse walking the tokenizer's arrays one element at a time, then dequantising every tensor:
tens of seconds before the first batch, on every load. The first load of a .gguf (an offline
alias, a local file, one downloaded from the hub) therefore stores what transformers made of it
as an ordinary checkpoint folder:

    config.json, tokenizer files    AutoConfig / AutoTokenizer of the GGUF, saved
    model.safetensors               the dequantised weights, in the dtype transformers produced
    gguf.json                       the file's identity and facts (read_gguf_facts), the dtype

and every later load reads that folder, with memory-mapped safetensors. The weights are those of
the architecture's causal LM (``AutoModelForCausalLM``, else ``AutoModel``), so the probe's base
model and training's LM both load from it; tied weights are stored once.

Layout: ``$CONDENSE_CACHE/converted/<alias>/<dtype>-<key>/`` for an offline alias and
``$CONDENSE_CACHE/converted/files/<file stem>-<dtype>-<key>/`` for any other file. ``key`` hashes
the file's identity (an alias: the sha256 in its table; another file: its size, modification time
and a sha256 of its whole header and of samples of its tensor data) with the cache format and the
versions of transformers, gguf and torch, so an upgrade converts again rather than serve what an
older version made. Entries are built once, atomically and by one process at a time
(:func:`condense.models.cache_folders.build_once`). Disk cost: the weights in their dtype, about
4 bytes a parameter in float32 (several times the quantised file).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condense.errors import CondenseError, first_line
from condense.models.cache_folders import CACHE_ENV, build_once, cache_dir
from condense.models.checkpoints import read_gguf_facts

__all__ = ["ConvertedGguf", "FORMAT", "converted_root", "converted_alias_folder", "converted_files_folder",
           "file_identity", "entry_folder", "convert_gguf", "quiet_gguf_loading"]

FORMAT = 1  # bump when what an entry holds changes
FACTS_FILE = "gguf.json"
WEIGHTS_FILE = "model.safetensors"
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16
_HEADER_LIMIT = 256 << 20  # hash at most this much of a header (a vocabulary is a few MB)
_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4}


@dataclass(frozen=True)
class ConvertedGguf:
    """A cache entry: ``folder`` is a checkpoint folder made from the GGUF file ``gguf``.

    ``dtype``: the weights' dtype in the folder; ``facts``: :func:`read_gguf_facts` of the file;
    ``converted``: whether this call made the entry (first use) rather than found it.
    """

    folder: Path
    gguf: Path
    dtype: str
    facts: dict[str, Any]
    converted: bool


def converted_root() -> Path:
    """``$CONDENSE_CACHE/converted``."""
    return cache_dir() / "converted"


def converted_alias_folder(alias: str) -> Path:
    """Where the converted weights of offline alias ``alias`` live (one entry per dtype)."""
    return converted_root() / alias


def converted_files_folder() -> Path:
    """Where the converted weights of GGUF files that are not aliases live."""
    return converted_root() / "files"


def _software() -> dict[str, Any]:
    """What a conversion depends on besides the file."""
    versions = {}
    for package in ("transformers", "gguf", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"format": FORMAT, **versions}


def file_identity(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """What identifies the contents of the GGUF file ``path``: ``sha256`` when known (an alias's
    table), else its size, modification time and a sha256 of its header and of 17 samples of 64 KiB
    (evenly spaced through the tensor data, and its last bytes)."""
    stat = path.stat()
    if sha256:
        return {"sha256": sha256, "size": stat.st_size}
    header = min(int(read_gguf_facts(path)["header_bytes"]), _HEADER_LIMIT)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(header))
        span = max(stat.st_size - header - _SAMPLE_BYTES, 0)
        for i in range(_SAMPLES + 1):
            f.seek(header + span * i // _SAMPLES)
            digest.update(f.read(_SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def _key(identity: dict[str, Any]) -> str:
    blob = json.dumps({"file": identity, "software": _software()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entry_folder(path: Path, dtype: str, identity: dict[str, Any], alias: str | None = None) -> Path:
    """The cache entry of GGUF file ``path`` converted to ``dtype`` (``float32``, ``bfloat16``,
    ``float16`` or ``auto``: what transformers picks for the file)."""
    if alias:
        return converted_alias_folder(alias) / f"{dtype}-{_key(identity)}"
    stem = re.sub(r"[^\w.-]", "_", path.stem)[:60] or "model"
    return converted_files_folder() / f"{stem}-{dtype}-{_key(identity)}"


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (FACTS_FILE, WEIGHTS_FILE, "config.json"))


def convert_gguf(path: str | Path, dtype: str = "float32", alias: str | None = None,
                 sha256: str | None = None) -> ConvertedGguf:
    """The cache entry of the GGUF file ``path`` in ``dtype``, converting it on first use.

    ``alias`` and ``sha256``: the offline alias the file belongs to and its sha256 from the table.
    CondenseError when transformers cannot make a model of the file or the cache cannot be
    written (one line; nothing that looks complete is left behind).
    """
    path = Path(os.path.abspath(path))  # not resolved: a hub snapshot's link keeps the file's name
    identity = file_identity(path, sha256)  # an alias's: no read of the file at all
    folder = entry_folder(path, dtype, identity, alias)

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        model_class, produced = _convert(path, dtype, tmp)
        record = {"format": FORMAT, "gguf": str(path), "alias": alias, "identity": identity,
                  "software": _software(), "requested_dtype": dtype, "dtype": produced,
                  "model_class": model_class, "facts": read_gguf_facts(path),
                  "seconds": round(time.perf_counter() - start, 2)}
        (tmp / FACTS_FILE).write_text(json.dumps(record, indent=2) + "\n")

    made = build_once(folder, build, lambda: _is_complete(folder), f"convert {path.name!r}",
                      before=lambda: _check_space(path, read_gguf_facts(path), dtype, folder.parent))
    if made and alias:
        _remove_other_entries(folder)
    record = json.loads((folder / FACTS_FILE).read_text())
    return ConvertedGguf(folder, path, record["dtype"], record["facts"], made)


def _check_space(path: Path, facts: dict[str, Any], dtype: str, where: Path) -> None:
    need = int(facts["parameters"]) * _ITEMSIZE[dtype] + (int(facts["header_bytes"]) << 2)
    free = shutil.disk_usage(where).free
    if free < need:
        raise CondenseError(f"converting {path.name!r} needs {need / 1e6:.0f} MB in {str(where)!r} (its weights "
                            f"in {dtype}), only {free / 1e6:.0f} MB are free; free space or set {CACHE_ENV} to "
                            "another folder")


def _remove_other_entries(keep: Path) -> None:
    """Drop an alias's entries of the same dtype made by other software versions: never read again."""
    dtype = keep.name.split("-", 1)[0]
    for other in keep.parent.glob(f"{dtype}-*"):
        if other != keep and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def _convert(path: Path, dtype: str, tmp: Path) -> tuple[str, str]:
    """Load ``path`` with transformers and save config, tokenizer and weights into ``tmp``.

    Returns (model class name, the weights' dtype).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder, name = str(path.parent), path.name
    with quiet_gguf_loading():
        try:
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
        except (OSError, ValueError) as err:
            raise CondenseError(f"cannot make a model config of {str(path)!r} ({first_line(err)}); this "
                                "transformers may not support its architecture") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except (OSError, ValueError, TypeError) as err:
            raise CondenseError(f"cannot load the tokenizer of {str(path)!r} ({first_line(err)})") from None
        auto = AutoModelForCausalLM if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else AutoModel
        try:
            model = auto.from_pretrained(folder, gguf_file=name, config=config,
                                         dtype=dtype if dtype == "auto" else getattr(torch, dtype))
        except (OSError, ValueError) as err:
            raise CondenseError(f"cannot load model weights from {str(path)!r} ({first_line(err)})") from None
    config.save_pretrained(tmp)  # the config of the file, not the model's (which names the GGUF quantizer)
    tokenizer.save_pretrained(tmp)
    tensors, seen = {}, set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # a tied weight (lm_head = embeddings); the config re-ties it
            continue
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.contiguous()
    produced = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    model_class = type(model).__name__
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    del model, tensors
    gc.collect()  # the dequantised copy goes before the caller maps the saved one
    return model_class, produced


@contextlib.contextmanager
def quiet_gguf_loading() -> Iterator[None]:
    """No progress bars while converting: transformers' own, and the bare tqdm bar of GGUF
    de-quantisation, which ignores transformers' switch."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging

    original, bars_were_off = gguf_utils.tqdm, logging.is_progress_bar_enabled() is False
    gguf_utils.tqdm = functools.partial(original, disable=True)
    logging.disable_progress_bar()
    try:
        yield
    finally:
        gguf_utils.tqdm = original
        if not bars_were_off:
            logging.enable_progress_bar()
