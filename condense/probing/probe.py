"""The probe: corpus -> tokens -> batched forward -> per-layer accumulators -> ProbeResult."""

from __future__ import annotations

import inspect
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from condense.errors import CondenseError
from condense.metrics.spectrum import worker_pool
from condense.metrics.streaming import PaperCosineAccumulator, PooledCosineAccumulator, TokenGeometryAccumulator
from condense.metrics.trend import bootstrap_mean_cos, depth_trend, last_layers_means
from condense.probing.baselines import cached_gaussian_baseline
from condense.probing.batching import Batch, auto_batch_start, forward_batches
from condense.probing.checkpoint import (CheckpointPlan, ProbeInterrupted, load_checkpoint, save_checkpoint,
                                        stop_requests)
from condense.probing.corpus_level import CorpusLevel, check_corpus_sample, sample_size
from condense.probing.corpus import (build_sequences, is_corpus_spec, read_documents, read_rows, texts_corpus,
                                     token_hash)
from condense.probing.extract import HiddenStateReader
from condense.probing.layers import resolve_layers
from condense.probing.sampling import paper_sequences
from condense.probing.threads import one_torch_thread
from condense.models import LoadedModel, from_memory, load_model, probing_mode
from condense.results import ProbeResult, RESULT_FORMAT

__all__ = ["ProbeSettings", "probe", "probe_loaded"]

AGGREGATES = ("pooled", "paper")
SAMPLERS = ("sequential", "paper")
CENTERS = ("none", "sequence", "corpus")
NONFINITE = ("error", "exclude")
HOLD_LIMIT = 512 << 20  # bytes of a CPU batch's selected layers that may wait for the worker threads
# (two batches' worth are alive at once: one being measured, the next one being forwarded)
BASELINE_KEYS = ("mean_cos", "std_cos", "q05_cos", "q95_cos", "mean_pair_angle_deg", "cone_half_angle_mean_deg",
                 "cone_log10_sphere_fraction", "mev", "effective_rank", "hf_lf_ratio")


@dataclass
class ProbeSettings:
    """Everything that decides a probe's numbers (recorded in run.json)."""

    layers: str = "all"
    corpus: str = "builtin"
    text_field: str = "text"
    num_seqs: int = 100
    max_length: int = 512
    batch_size: int | str = "auto"
    shuffle: bool = False
    seed: int = 0
    sampler: str = "sequential"
    aggregate: str = "pooled"
    paper_ragged: bool = False
    keep_special_tokens: bool = False
    exclude_first_token: bool = False
    center: str = "none"
    spectrum_seqs: int = 8
    bootstrap: int = 0
    nonfinite: str = "error"
    precision: str = "float32"
    corpus_sample: int | str = "auto"

    def validate(self) -> None:
        for name in ("num_seqs", "max_length", "batch_size"):
            value = getattr(self, name)
            if name == "batch_size" and value == "auto":
                continue
            if not isinstance(value, int) or value < 1:
                raise CondenseError(f"bad --{name.replace('_', '-')} {value!r}: must be a positive integer")
        if self.max_length < 2:
            raise CondenseError(f"bad --max-length {self.max_length}: need at least 2 tokens for a pair")
        for name, allowed in (("aggregate", AGGREGATES), ("sampler", SAMPLERS), ("center", CENTERS),
                              ("nonfinite", NONFINITE), ("precision", ("float32", "float64"))):
            if getattr(self, name) not in allowed:
                raise CondenseError(f"bad --{name} {getattr(self, name)!r}: use {' or '.join(allowed)}")
        if self.spectrum_seqs < 0 or self.bootstrap < 0:
            raise CondenseError("--spectrum-seqs and --bootstrap must be >= 0")
        check_corpus_sample(self.corpus_sample)
        if self.shuffle and self.sampler == "paper":
            raise CondenseError("--shuffle goes with --sampler sequential: the paper's sampler draws its own random starts")
        if self.bootstrap and self.aggregate == "paper":
            raise CondenseError("--bootstrap needs --aggregate pooled: the paper's averaged matrix has no per-sequence values")


def probe(model: str | os.PathLike | torch.nn.Module, *, tokenizer: Any = None, name: str | None = None,
          revision: str | None = None, dtype: str = "auto", device: str = "auto",
          trust_remote_code: bool = False, init: str = "pretrained", init_seed: int = 0,
          device_map: str | None = None, max_memory: str | None = None, offload_folder: str | None = None,
          quiet: bool = False, checkpoint: str | Path | None = None, resume: bool = False,
          corpus: Any = "builtin", **settings: Any) -> ProbeResult:
    """Measure per-layer embedding condensation of ``model``.

    ``model`` is a name (alias, folder, .gguf or hub id), loaded with the load options
    (``revision``, ``dtype``, ``device``, ``init``, ``device_map`` with optional ``max_memory``
    such as ``"0=20GiB,cpu=60GiB"`` and ``offload_folder``, ...), or a Hugging Face model object
    already in memory, probed in place with its ``tokenizer`` (see
    :func:`condense.models.from_memory`): never copied or moved, in eval mode during the probe,
    its modules' training flags and the random generators restored afterwards; ``name`` labels it
    in run.json (default: its config's ``_name_or_path``). ``corpus`` is a corpus name or file
    (docs/guides/probe-models.md), or texts in memory: a list of strings, a ``datasets.Dataset``
    (column ``text_field``) or one of its columns, recorded as ``texts:<n>:sha256=<hash>``. Other keyword
    settings are the fields of :class:`ProbeSettings` (``layers``, ``num_seqs``, ``max_length``,
    ``batch_size`` (an int or ``"auto"``), ``aggregate``, ...). Returns a ProbeResult; call
    ``.save(folder)`` to write it.
    """
    texts = None if is_corpus_spec(corpus) else texts_corpus(corpus, settings.get("text_field", "text"),
                                                               settings.get("shuffle", False), settings.get("seed", 0))
    cfg = ProbeSettings(corpus=texts.label if texts else str(corpus), **settings)
    cfg.validate()
    documents, rows = None, None  # read now: a bad corpus fails before any model loads
    if cfg.sampler == "paper":
        rows = (texts.rows, "texts") if texts else read_rows(cfg.corpus, cfg.text_field)
    else:
        documents = iter(texts.documents) if texts else read_documents(cfg.corpus, cfg.text_field, cfg.shuffle,
                                                                       cfg.seed)
    load_options = dict(revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                        init=init, init_seed=init_seed, device_map=device_map, max_memory=max_memory,
                        offload_folder=offload_folder)
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is not None or name is not None:
            raise CondenseError("tokenizer= and name= go with a model object; a model name loads its own tokenizer")
        loaded = load_model(str(model), **load_options)
        result = probe_loaded(loaded, cfg, documents=documents, rows=rows, quiet=quiet, checkpoint=checkpoint,
                                  resume=resume)
        result.run["load_options"] = load_options  # with the settings: everything `condense rerun` needs
    else:
        changed = [k for k, v in load_options.items() if v != inspect.signature(probe).parameters[k].default]
        if changed:
            raise CondenseError(f"{changed[0]}= applies to a model loaded by name; a model object is probed "
                                "as it is, where it is (set its dtype and device before probing)")
        loaded = from_memory(model, tokenizer, name)
        with probing_mode(model):
            result = probe_loaded(loaded, cfg, documents=documents, rows=rows, quiet=quiet, checkpoint=checkpoint,
                                  resume=resume)
    if texts:
        result.run["corpus_texts"] = texts.record
    return result


def probe_loaded(loaded: LoadedModel, cfg: ProbeSettings, documents=None, quiet: bool = True,
                 checkpoint: str | Path | CheckpointPlan | None = None, resume: bool = False,
                 rows: tuple[Sequence[str], str] | None = None) -> ProbeResult:
    """Probe an already-loaded model (reuse one model for several corpora or settings).

    The texts are ``cfg.corpus``'s, or ``documents`` (an iterable of Documents) or, for the
    paper's sampler, ``rows`` (every row's text, and a label naming them in run.json).

    With ``checkpoint`` (a path, or a :class:`CheckpointPlan` with the interval), the accumulators
    are saved there every 5 minutes of probing (at a batch boundary, atomically), and SIGINT/SIGTERM
    stop the run after the current batch, save them and raise ProbeInterrupted; ``resume=True``
    continues from that file to the numbers of an uninterrupted run.
    """
    start = time.perf_counter()
    cfg.validate()
    plan = CheckpointPlan.of(checkpoint)
    sequences = _sequences(cfg, loaded.tokenizer, documents, rows)
    if not sequences:
        raise CondenseError(f"corpus {cfg.corpus!r} gave no tokens with this tokenizer")
    seq_len = max(len(s.input_ids) for s in sequences)
    if cfg.aggregate == "paper" and not cfg.paper_ragged:
        shortest = min(sequences, key=lambda s: len(s.input_ids))
        if len(shortest.input_ids) < seq_len:
            raise CondenseError(
                f"--aggregate paper needs sequences of equal length, but {shortest.documents[0]} gives "
                f"{len(shortest.input_ids)} < {seq_len} tokens; lower --max-length, lower --num-seqs, or add --paper-ragged"
            )
    reader = HiddenStateReader(loaded.model)
    layers = resolve_layers(cfg.layers, reader.n_entries)
    dim = loaded.info["hidden_size"]
    geometry_dtype = torch.float64 if cfg.precision == "float64" else torch.float32
    key = {"model": loaded.info.get("model"), "settings": asdict(cfg), "token_hash": token_hash(sequences)}
    if resume and plan and plan.path.exists():
        state = load_checkpoint(plan.path, key)
        center = {i: c.to(reader.input_device) for i, c in state["center"].items()} if state["center"] else None
    else:
        center = _corpus_means(reader, loaded, sequences, cfg, layers, geometry_dtype) if cfg.center == "corpus" else None
        state = {"done": 0, "elapsed": 0.0, "batch_size": None, "center": center,
                 "cosine": {i: (PaperCosineAccumulator(seq_len - cfg.exclude_first_token, cfg.paper_ragged)
                                if cfg.aggregate == "paper" else PooledCosineAccumulator()) for i in layers},
                 "geometry": {i: TokenGeometryAccumulator(dim, cfg.spectrum_seqs) for i in layers},
                 "corpus": CorpusLevel(layers, dim, sample_size(cfg.corpus_sample, len(layers), dim), cfg.seed,
                                       cfg.aggregate == "paper", int(cfg.exclude_first_token))}
    cosine, geometry, corpus = state["cosine"], state["geometry"], state["corpus"]
    resumed_from = state["done"] or None
    earlier_seconds = state["elapsed"]  # probing time of the sessions before a resume
    used: dict = {"batch_size": state["batch_size"]} if state["batch_size"] else {}

    # CPU: the forward pass keeps a batch's selected layers (with the default batch size, what the floor's
    # output_hidden_states keeps for one 512-token sequence) and worker threads measure them during the
    # next batch's forward pass; accelerators: each layer is measured as its hook fires, spectra in CPU
    # workers meanwhile
    on_cpu = reader.input_device.type == "cpu"
    held_bytes = _batch_size(cfg, sequences, loaded, reader) * cfg.max_length * dim * 4 * len(layers)
    workers = worker_pool() if on_cpu and held_bytes <= HOLD_LIMIT else None
    spectra = "inline" if workers else "defer" if on_cpu else "async"

    @torch.inference_mode()
    @one_torch_thread
    def measure(batch: Batch, i: int, hidden: torch.Tensor) -> tuple[dict, dict, dict]:
        h, mask, attention, norms = _prepare(hidden, batch, cfg, i, geometry_dtype, center)
        unit = h * (mask / norms.clamp_min(1e-8)).unsqueeze(-1)  # unit rows, zero where not counted
        if cfg.aggregate == "paper":
            start_at = int(cfg.exclude_first_token)
            pairs, upper = cosine[i].measure(h[:, start_at:], attention[:, start_at:]), None
        else:  # the spectrum's Gram matrices come from the pair products (pooled mode counts the same tokens)
            pairs = cosine[i].measure(unit, mask, keep=geometry[i].spectrum_rows(mask))
            upper = pairs.pop("upper", None)
        across = corpus.measure(i, h, unit, norms, mask, attention, batch.positions, batch.offset)
        return pairs, geometry[i].measure(h, mask, batch.positions, unit, norms, upper, spectra=spectra), across

    def save() -> None:
        state.update(batch_size=used.get("batch_size"), elapsed=earlier_seconds + time.perf_counter() - start)
        save_checkpoint(plan.path, key, state)
        plan.saved()

    with stop_requests() as stop:
        for batch, measured in _forward_batches(reader, loaded, sequences, cfg, layers, quiet, "probing", used,
                                                measure, start=state["done"], workers=workers):
            if spectra == "defer":  # all layers' spectra at once, on every core, before the next forward pass
                parts = [measured[i][1] for i in layers]
                for part in parts:
                    TokenGeometryAccumulator.start_spectra(part)
                for part in parts:
                    part["spectra"] = [job.result() for job in part["spectra"]]
            for i in layers:  # a batch counts only once every selected layer of it was measured
                cosine[i].add(measured[i][0])
                geometry[i].add(measured[i][1])
                corpus.add(i, measured[i][2])
            del measured
            state["done"] = batch.offset + batch.ids.shape[0]
            unfinished = state["done"] < len(sequences)
            if stop.signal_name and plan and unfinished:
                save()
                raise ProbeInterrupted(
                    f"{stop.signal_name}: stopped after {state['done']} of {len(sequences)} sequences; "
                    "repeat the same command with --resume to continue"
                )
            if stop.signal_name:
                raise KeyboardInterrupt
            if plan and unfinished and plan.due():
                save()
    if not any(g.n_tokens for g in geometry.values()):
        raise CondenseError("no token survived the masks (every sequence has < 2 counted tokens); try --keep-special-tokens")
    facts = {"batch_size_used": used.get("batch_size"), "seconds": earlier_seconds + time.perf_counter() - start,
             "resumed_from": resumed_from}
    return _assemble(loaded, cfg, sequences, reader, layers, cosine, geometry, corpus, dim, facts)


def _sequences(cfg: ProbeSettings, tokenizer, documents, rows) -> list:
    """The token sequences of the run, by ``cfg.sampler``."""
    if cfg.sampler == "paper":
        if rows is None:
            rows = (([d.text for d in documents], "documents") if documents is not None
                    else read_rows(cfg.corpus, cfg.text_field))
        return paper_sequences(rows[0], tokenizer, cfg.max_length, cfg.num_seqs, rows[1])
    if documents is None:
        documents = read_documents(cfg.corpus, cfg.text_field, cfg.shuffle, cfg.seed)
    return build_sequences(documents, tokenizer, cfg.max_length, cfg.num_seqs)


def _batch_size(cfg, sequences, loaded, reader) -> int:
    """The batch size a run starts with: ``--batch-size``, or what ``auto`` picks first."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    return auto_batch_start(len(sequences), cfg.max_length, loaded.info["hidden_size"], reader.n_entries,
                            reader.input_device)


def _forward_batches(reader, loaded, sequences, cfg, layers, quiet, label, used, measure, start: int = 0,
                     workers=None):
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    size = used.get("batch_size") or _batch_size(cfg, sequences, loaded, reader)
    yield from forward_batches(reader, sequences, size, cfg.batch_size == "auto", pad_id, layers,
                               cfg.aggregate == "pooled" and not cfg.keep_special_tokens,
                               cfg.exclude_first_token, quiet, label, used, measure, start, workers)


def _prepare(h, batch, cfg, layer, dtype, center):
    """Hidden states of one layer in the geometry dtype, checked, centred; with that layer's masks
    and token norms [B, S]."""
    h = h.to(dtype)
    mask, attention = batch.mask, batch.attention
    norms = torch.linalg.vector_norm(h, dim=-1)
    # a NaN or inf anywhere in a token makes its norm non-finite: only then is every element checked
    if bool((attention & ~torch.isfinite(norms)).any()):
        finite = torch.isfinite(h).all(dim=-1)
        bad = attention & ~finite
        if bool(bad.any()):
            r, pos = (int(v) for v in bad.nonzero()[0])
            if cfg.nonfinite == "error":
                raise CondenseError(
                    f"non-finite hidden state at layer {layer}, sequence {batch.offset + r}, position {pos} "
                    f"({int(bad.sum())} tokens in this batch); use --dtype float32, or --nonfinite exclude to drop such tokens"
                )
            if cfg.aggregate == "paper" and not cfg.paper_ragged:  # an S x S average cannot lose one token
                raise CondenseError(
                    f"non-finite hidden state at layer {layer}, sequence {batch.offset + r}, position {pos}: "
                    "--nonfinite exclude in --aggregate paper needs --paper-ragged (each matrix entry averaged over "
                    "the sequences that keep both tokens), or use --dtype float32"
                )
            mask, attention = mask & finite, attention & finite
            h = torch.where(finite.unsqueeze(-1), h, torch.zeros((), dtype=dtype, device=h.device))
            norms = torch.linalg.vector_norm(h, dim=-1)
    if cfg.center == "sequence":
        m = mask.unsqueeze(-1).to(dtype)
        h = h - (h * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp_min(1)
    elif center is not None:
        h = h - center[layer]
    if cfg.center != "none":
        norms = torch.linalg.vector_norm(h, dim=-1)
    return h, mask, attention, norms


def _corpus_means(reader, loaded, sequences, cfg, layers, dtype) -> dict[int, torch.Tensor]:
    """Per-layer mean of the counted tokens over the whole corpus (one extra forward pass)."""
    sums: dict[int, torch.Tensor] = {}
    count = 0

    def token_sum(batch: Batch, _i: int, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden.to(dtype) * batch.mask.unsqueeze(-1)).sum(dim=(0, 1))

    for batch, measured in _forward_batches(reader, loaded, sequences, cfg, layers, True, "centring", {}, token_sum):
        for i, s in measured.items():
            sums[i] = s if i not in sums else sums[i] + s
        count += int(batch.mask.sum())
    return {i: s / max(count, 1) for i, s in sums.items()}


def _assemble(loaded, cfg, sequences, reader, layers, cosine, geometry, corpus, dim, facts) -> ProbeResult:
    n_entries = reader.n_entries
    rows, densities, cross_densities, seq_sums, seq_counts = [], [], [], [], []
    corpus.start_samples(worker_pool())  # in the worker threads while the other statistics finish here
    for i in layers:
        stats = cosine[i].finalize()
        across, cross_density = corpus.finalize(i, stats.columns["mean_cos"])
        rows.append({"layer": i, "layer_fraction": i / (n_entries - 1), **stats.columns, **across,
                     **geometry[i].finalize()})
        densities.append(stats.density)
        cross_densities.append(cross_density)
        seq_sums.append(stats.seq_pair_sums)
        seq_counts.append(stats.seq_pair_counts)
    table = pd.DataFrame(rows)
    first = ["layer", "layer_fraction", "n_seqs", "n_tokens", "n_pairs"]
    table = table[first + [c for c in table.columns if c not in first]]
    tokens_per_seq = int(np.median([len(s.input_ids) for s in sequences]))
    # here, not in the pool: its spectra are jobs of the pool, and a job must not wait for other jobs
    for key, value in cached_gaussian_baseline(tokens_per_seq, dim, seed=cfg.seed).items():
        table[f"gauss_{key}"] = value
    trend = {**depth_trend(table["layer"].to_numpy(), table["mean_cos"].to_numpy()),
             **last_layers_means(table["mean_cos"].to_numpy())}
    if cfg.bootstrap:
        boot = bootstrap_mean_cos(table["layer"].to_numpy(), np.stack(seq_sums), np.stack(seq_counts),
                                  cfg.bootstrap, cfg.seed)
        table["mean_cos_ci_low"], table["mean_cos_ci_high"] = boot["mean_cos_ci"][:, 0], boot["mean_cos_ci"][:, 1]
        for key in ("spearman", "kendall"):
            trend[f"{key}_ci_low"], trend[f"{key}_ci_high"] = boot[f"{key}_ci"]
    run = {
        "format": RESULT_FORMAT,
        **loaded.info,
        "num_hidden_state_entries": n_entries,
        "last_entry_after_final_norm": reader.last_entry_after_final_norm,
        "extraction": reader.method,
        "settings": asdict(cfg),
        "counts": {"sequences": len(sequences), "tokens": int(sum(len(s.input_ids) for s in sequences)),
                   "max_seq_len": max(len(s.input_ids) for s in sequences)},
        "token_hash": token_hash(sequences),
        "first_documents": [s.documents[0] for s in sequences[:5]],
        "sequence_starts": [s.start_row for s in sequences],
        "trend": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in trend.items()},
        "corpus_sample": corpus.record(rows[0] if rows else None),
        "batch_size_used": facts["batch_size_used"],
        "resumed_from_sequence": facts["resumed_from"],
        "wall_seconds": round(facts["seconds"], 3),
        "versions": _versions(),
    }
    return ProbeResult(table, np.stack(densities), trend, run,
                       cross_histograms=np.stack(cross_densities) if corpus.k else None)


def _versions() -> dict[str, str]:
    import transformers

    from condense import __version__

    return {"condense": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}
