"""Load a model and tokenizer from an alias, a local folder or .gguf file, or a hub id.

Probing needs hidden states only, so the base model (``AutoModel``) is loaded: a causal LM
checkpoint loses its LM head, which saves the vocabulary projection on every token.
``init="random"`` builds the architecture from its config with fresh seeded weights; configs of
the GPT-2 and Qwen3 families ship with condense so that works offline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from condense import hub
from condense.collector import collector_paused
from condense.errors import CondenseError, CondenseWarning, first_line
from condense.models.aliases import ALIAS_HINT, ALIASES, alias_location, install_command
from condense.models.assembly import locate_alias
from condense.models.checkpoints import check_config_json, check_weights, checkpoint_name, read_gguf_facts
from condense.models.gguf_cache import ConvertedGguf, convert_gguf

__all__ = ["LoadedModel", "load_model", "shipped_configs", "resolve_device", "resolve_dtype", "hub_reachable",
           "hub_revision", "resolve_source", "checkpoint_facts", "load_config", "load_tokenizer", "first_line",
           "converted_gguf"]


_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A ready-to-run base model, its tokenizer, and the facts run.json records about them."""

    model: torch.nn.Module
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


def shipped_configs() -> list[str]:
    """Names of the architecture configs that ship with condense (usable offline with --init random)."""
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.json"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or HF_ENDPOINT, on the port its URL names) answers a TCP
    connection within ``timeout``; False when HF_HUB_OFFLINE is set."""
    return hub.reachable(timeout)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CondenseError(f"--device {device!r} is not available here (no CUDA device); use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CondenseError("--device 'mps' is not available here; use --device cpu or auto")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise CondenseError(f"bad --device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype | str:
    """``auto``: float32 on CPU (half-precision matmuls are slow there), else the checkpoint's own."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else "auto"
    if dtype not in _DTYPES:
        raise CondenseError(f"bad --dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    chosen = _DTYPES[dtype]
    try:  # some devices lack half-precision kernels; find out before loading gigabytes
        a = torch.ones(4, 4, dtype=chosen, device=device)
        (a @ a).sum().item()
    except (RuntimeError, TypeError) as err:
        raise CondenseError(f"--dtype {dtype} does not run on {device} ({err}); use --dtype float32") from None
    return chosen


@collector_paused()  # a load makes hundreds of thousands of long-lived objects and no garbage
def load_model(
    name: str,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    init: str = "pretrained",
    init_seed: int = 0,
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Resolve ``name`` (alias, local folder, .gguf file, shipped config or hub id) and load it."""
    if init not in ("pretrained", "random"):
        raise CondenseError(f"bad --init {init!r}: use pretrained or random")
    if device_map and init == "random":
        raise CondenseError("--device-map needs --init pretrained (random weights are built on one device)")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source, gguf, hub_id = resolve_source(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    from_hub = not os.path.exists(source)
    what = f"model {name!r}" + (f" at revision {revision!r}" if revision else "")
    commit = hub_revision(source, revision, what, kwargs, init) if from_hub else None
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()  # load reports and length warnings are noise here
    transformers.utils.logging.disable_progress_bar()
    calls = hub.hub_calls(what) if from_hub else contextlib.nullcontext()
    with calls:
        converted = converted_gguf(name, source, gguf, kwargs, torch_dtype) if gguf and init == "pretrained" else None
        load_from, load_kwargs = (str(converted.folder), {"trust_remote_code": trust_remote_code}) if converted \
            else (source, kwargs)
        config, config_note = load_config(name, load_from, load_kwargs, init)
        tokenizer, tokenizer_source = load_tokenizer(load_from, load_kwargs, init)
    if converted:  # the checkpoint is the GGUF; the cache entry is where its conversion was read
        config_note = tokenizer_source = source
        if torch_dtype == "auto":
            torch_dtype = getattr(torch, converted.dtype)
    if init == "random":
        torch.manual_seed(init_seed)
        if dev.type == "cuda":
            torch.cuda.manual_seed_all(init_seed)
        # built where it will run: a 4B-parameter init takes seconds on a GPU, minutes on the CPU
        # (so random weights, like any seeded draw, depend on the device)
        with torch.device(dev):
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code,
                                          dtype=torch.float32 if torch_dtype == "auto" else torch_dtype)
    else:
        if os.path.isdir(source) and not gguf:
            check_weights(source)
        try:
            placement = _placement(device_map, max_memory, offload_folder)
            with hub.hub_calls(what) if from_hub and not converted else contextlib.nullcontext():
                model = AutoModel.from_pretrained(load_from, config=config, dtype=torch_dtype, **placement,
                                                  **load_kwargs)
        except (OSError, ValueError) as err:
            raise CondenseError(f"cannot load model weights from {source!r} ({first_line(err)}){ALIAS_HINT}") from None
    if device_map is None:
        model = model.to(dev)
    model.eval()
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    info = {
        "model": name,
        **checkpoint_facts(name, source, gguf, init, converted.facts if converted else None),
        "resolved": source if not gguf else os.path.join(source, gguf),
        "gguf_cache": str(converted.folder) if converted else None,
        "hub_id": hub_id,
        "revision": revision,
        "commit": commit,
        "init": init,
        "init_seed": init_seed if init == "random" else None,
        "config_source": config_note,
        "tokenizer_source": tokenizer_source,
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "model_class": type(model).__name__,
        "model_type": config.model_type,
        "num_layers": int(n_layers) if n_layers else None,
        "hidden_size": int(getattr(config, "hidden_size", None) or getattr(config, "n_embd")),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device) if device_map is None else f"device_map={device_map}",
    }
    if hasattr(model, "hf_device_map"):  # modules per device (cpu, cuda index, disk) as accelerate placed them
        placed = [str(d) for d in model.hf_device_map.values()]
        info["placement"] = {d: placed.count(d) for d in sorted(set(placed))}
    return LoadedModel(model, tokenizer, info)


def hub_revision(repo_id: str, revision: str | None, what: str, kwargs: dict[str, Any], init: str) -> str | None:
    """Pin the hub model's config, tokenizer and weights to one commit: set ``kwargs``' revision
    to the commit ``revision`` resolves to (returned), and ``local_files_only`` when only the cache
    can serve it. Random weights may do without (a shipped config, a fallback tokenizer)."""
    online = hub_reachable()
    try:
        commit, cached_only = hub.resolve_commit(repo_id, revision, what, online=online)
    except CondenseError as err:
        if init == "random":  # the loaders say what is missing, if anything
            kwargs.update({"local_files_only": not online, **({"revision": revision} if revision else {})})
            return None
        if not isinstance(err, hub.HubNotCached):
            raise
        shipped = _shipped_config_path(repo_id) is not None
        raise hub.HubNotCached(f"{err}{'; --init random works offline for it (shipped config)' if shipped else ''}"
                               f"{ALIAS_HINT}") from None
    kwargs["revision"] = commit
    if cached_only:
        kwargs["local_files_only"] = True  # fail in a second from the cache, not after a minute of retries
    return commit


def _placement(device_map: str | None, max_memory: str | None, offload_folder: str | None) -> dict[str, Any]:
    """from_pretrained arguments that spread a model over devices with accelerate."""
    if device_map is None:
        if max_memory or offload_folder:
            raise CondenseError("--max-memory and --offload-folder need --device-map auto")
        return {}
    if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise CondenseError(f"bad --device-map {device_map!r}: use auto, balanced, balanced_low_0 or sequential")
    out: dict[str, Any] = {"device_map": device_map}
    if max_memory:
        try:
            pairs = (item.split("=", 1) for item in max_memory.split(","))
            out["max_memory"] = {(int(k) if k.strip().isdigit() else k.strip()): v.strip() for k, v in pairs}
        except ValueError:
            raise CondenseError(f"bad --max-memory {max_memory!r}: use DEVICE=SIZE pairs such as 0=20GiB,cpu=60GiB") from None
    if offload_folder:
        out["offload_folder"] = offload_folder
    return out


def resolve_source(name: str) -> tuple[str, str | None, str | None]:
    """(folder or hub id, gguf file name or None, hub id or None).

    An installed offline alias is assembled on first use; one that is not installed falls back
    to its hub id when the hub answers, else it is an error naming the install command. A local
    checkpoint that is there but broken (config.json not JSON, a truncated .gguf) is an error
    about that file. A local folder that shadows an alias or a shipped config gets a warning.
    ``ORG/REPO/FILE.gguf`` (not a local path) names one GGUF file of a hub repository.
    """
    path = Path(name).expanduser()
    if name in ALIASES:
        alias = ALIASES[name]
        if path.exists() and "/" not in name:
            warnings.warn(f"{name!r} is the offline alias; the local {str(path)!r} of the same name is not "
                          f"used (pass ./{name} for it)", CondenseWarning, stacklevel=2)
        found = locate_alias(alias)
        if found:
            return (*found, alias.hub_id)
        if not hub_reachable():
            raise CondenseError(f"offline model {name!r} is not installed and the hub is unreachable; install it "
                                f"with: {install_command(alias)}  (or `make models`)")
        return alias.hub_id, None, alias.hub_id
    bare = not name.startswith((".", "/", "~")) and name.count("/") <= 1  # as a hub id or config name is written
    if bare and path.exists() and _shipped_config_path(name) is not None:
        hub = json.loads(_shipped_config_path(name).read_text()).get("_source", name)
        warnings.warn(f"using the local {str(path)!r}, not the shipped {name} config or the hub model; pass "
                      f"{hub} for those (or run from another folder)", CondenseWarning, stacklevel=2)
    if path.is_file() and path.suffix == ".gguf":
        read_gguf_facts(path)  # a cut or foreign file is named here, not reported as missing
        return str(path.parent), path.name, None
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").exists():
            check_config_json(path)
            return str(path), None, None
        if len(ggufs) == 1:
            read_gguf_facts(ggufs[0])
            return str(path), ggufs[0].name, None
        raise CondenseError(f"{name!r} is a folder but not a checkpoint (no config.json or single .gguf file){ALIAS_HINT}")
    if not path.exists() and name.count("/") > 1 and name.endswith(".gguf") and not name.startswith((".", "/", "~")):
        org, repo, file = name.split("/", 2)  # ORG/REPO/FILE.gguf: one GGUF file of a hub repository
        return f"{org}/{repo}", file, f"{org}/{repo}"
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CondenseError(f"{name!r} is not a checkpoint folder, .gguf file or hub id{ALIAS_HINT}")
    return name, None, name


def checkpoint_facts(name: str, source: str, gguf: str | None, init: str = "pretrained",
                     gguf_facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """What run.json records about the checkpoint itself (``gguf_facts``: the GGUF's, when already read).

    ``label``: the alias, else the checkpoint's own name (GGUF ``general.name``, a hub-style
    ``_name_or_path`` in config.json, the file or folder name), else the hub id's last part;
    ``quantization``: the GGUF file type (``Q4_K_M``), None for unquantised or random weights;
    ``gguf_tensor_types``: {tensor type: count} of a GGUF file.
    """
    local = os.path.exists(source)
    facts = gguf_facts or (read_gguf_facts(os.path.join(source, gguf)) if gguf and local else None)
    if name in ALIASES:
        label = name
    elif not local:
        label = name.rstrip("/").split("/")[-1]
    else:
        config = check_config_json(source) if not gguf else None
        label = checkpoint_name(os.path.join(source, gguf) if gguf else source, facts, config)
    return {"label": label, "quantization": facts["quantization"] if facts and init != "random" else None,
            "gguf_tensor_types": facts["tensor_types"] if facts else None}


def _shipped_config_path(name: str) -> Path | None:
    key = name.lower().split("/")[-1]
    path = _CONFIG_DIR / f"{key}.json"
    return path if path.exists() else None


def load_config(name: str, source: str, kwargs: dict, init: str) -> tuple[Any, str]:
    """(config, where it came from) for ``name`` resolved to ``source``.

    ``kwargs`` are the ``from_pretrained`` arguments (``gguf_file``, ``revision``,
    ``local_files_only``, ``trust_remote_code``). With ``init="random"`` a shipped config of
    that name is used, so random weights need no network. CondenseError when nothing is found.
    """
    from transformers import AutoConfig

    shipped = None if os.path.exists(name) else _shipped_config_path(name)
    if init == "random" and shipped is not None:
        facts = json.loads(shipped.read_text())
        facts.pop("_source", None)
        return AutoConfig.for_model(facts.pop("model_type"), **facts), f"shipped:{shipped.name}"
    try:
        return AutoConfig.from_pretrained(source, **kwargs), source
    except (OSError, ValueError) as err:
        if os.path.exists(source) and kwargs.get("gguf_file"):  # found, but transformers cannot make a config of it
            raise CondenseError(f"cannot make a model config of {os.path.join(source, kwargs['gguf_file'])!r} "
                                f"({first_line(err)}); this transformers may not support its architecture") from None
        if os.path.exists(source):
            raise CondenseError(f"cannot read the config of the local checkpoint {source!r} ({first_line(err)}); "
                                "it needs a config.json with a model_type transformers knows") from None
        hint = ALIAS_HINT
        if shipped is not None:
            hint = f"; --init random works offline for it (shipped config){hint}"
        raise CondenseError(f"cannot find model {name!r} locally or on the Hugging Face hub ({first_line(err)}){hint}") from None


def load_tokenizer(source: str, kwargs: dict, init: str) -> tuple[Any, str]:
    """(tokenizer, where it came from). With ``init="random"`` and no tokenizer to be had, the
    tokenizer of an installed offline alias stands in (recorded as ``fallback:<alias>``)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, **kwargs), source
    except (OSError, ValueError, TypeError) as err:
        if init != "random":
            raise CondenseError(f"cannot load the tokenizer of {source!r} ({first_line(err)}){ALIAS_HINT}") from None
    for alias_name, alias in ALIASES.items():  # random weights need any reasonable tokenizer
        found = alias_location(alias)
        if found:
            folder, gguf = found
            extra = {"gguf_file": gguf} if gguf else {}
            return AutoTokenizer.from_pretrained(folder, **extra), f"fallback:{alias_name}"
    raise CondenseError(
        f"no tokenizer for {source!r} offline and no fallback installed; {install_command(ALIASES['smollm2-135m'])}"
    )


def converted_gguf(name: str, source: str, gguf: str, kwargs: dict, dtype: Any) -> ConvertedGguf:
    """The conversion-cache entry of the GGUF ``gguf`` of ``source`` (a folder, or a hub id whose file is
    downloaded first) in ``dtype`` (a torch dtype or ``"auto"``); converted on first use."""
    if os.path.exists(source):
        path = Path(source, gguf)
    else:
        from transformers.utils import cached_file

        try:
            path = Path(cached_file(source, gguf, revision=kwargs.get("revision"),
                                    local_files_only=kwargs.get("local_files_only", False)))
        except OSError as err:
            raise CondenseError(f"cannot find {gguf!r} of {source!r} locally or on the Hugging Face hub "
                                f"({first_line(err)}){ALIAS_HINT}") from None
    alias = ALIASES.get(name)  # resolve_source gives an alias's own file, or no GGUF at all
    return convert_gguf(path, "auto" if dtype == "auto" else str(dtype).removeprefix("torch."),
                        alias=alias.name if alias else None, sha256=alias.sha256 if alias else None)
