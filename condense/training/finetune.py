"""``finetune``: train a causal LM with an optional dispersion loss, probing held-out text as it goes.

A plain, seeded AdamW loop (deterministic on CPU): each step's loss is the next-token
cross-entropy of a batch of packed ``seq_len`` blocks, plus ``coeff`` times the dispersion loss
of the chosen blocks' outputs (collected by :func:`condense.dispersion.attach_dispersion`). At
step 0, every ``probe_every`` steps and at the end, the model is probed (the standard probe,
pooled convention, every layer) on held-out documents, and its LM loss on the same held-out
sequences is measured. Everything lands atomically in one folder (see :mod:`.run`).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from condense.dispersion import DispersionLoss, attach_dispersion
from condense.errors import CondenseError
from condense.probing.corpus import TokenSequence
from condense.models import LoadedModel, resolve_device
from condense.probing.probe import ProbeSettings, probe_loaded
from condense.results import ProbeResult
from condense.training.data import CorpusSplit, block_batches, heldout_sequences, pack_blocks, split_corpus
from condense.training.model import CausalSource, load_causal_lm, probe_view, resolve_causal_source
from condense.training.run import (
    FINETUNE_FORMAT,
    MARKER,
    FinetuneRun,
    atomic_output,
    check_out,
    load_finetune,
    probe_folder,
)
from condense.training.settings import FinetuneSettings

__all__ = ["finetune", "heldout_lm_loss"]

LOSS_COLUMNS = ["step", "lm_loss", "dispersion_loss", "total_loss", "lr"]
PROBE_COLUMNS = ["step", "heldout_lm_loss", "mean_cos_last_half", "mean_cos_last", "spearman", "kendall"]


def finetune(model: str, out: str | Path, *, baseline: str | Path | None = None, device: str = "auto",
             trust_remote_code: bool = False, quiet: bool = False, **settings: Any) -> FinetuneRun:
    """Fine-tune (``init="pretrained"``) or pre-train (``init="random"``) ``model`` and save into ``out``.

    ``model`` is anything ``condense probe`` accepts (alias, checkpoint folder, .gguf, hub id;
    with ``init="random"`` also a shipped config name such as ``gpt2``). Keyword ``settings``
    are the fields of :class:`FinetuneSettings` (``corpus``, ``dispersion``, ``coeff``,
    ``where``, ``steps``, ``lr``, ``batch_size``, ``seq_len``, ``seed``, ``probe_every``,
    ``probe_seqs``, ``heldout``, ...). ``baseline``: a previous finetune folder, drawn beside
    this run in ``compare.png``. Every input is checked before the weights load; bad ones raise
    CondenseError. Returns the run as written (``FinetuneRun``, folder = ``out``).
    """
    started = time.perf_counter()
    try:
        cfg = FinetuneSettings(**settings)
    except TypeError as err:
        raise CondenseError(f"unknown finetune setting ({err})") from None
    cfg.validate()
    inputs = _prepare(model, Path(out), cfg, baseline, device, trust_remote_code)
    loaded = load_causal_lm(inputs.source, inputs.device, cfg.seed)
    timings = {"setup_seconds": time.perf_counter() - started}
    with atomic_output(Path(out)) as tmp:
        losses, probes, results = _train(loaded, cfg, inputs, tmp, timings, quiet)
        t0 = time.perf_counter()
        (tmp / "checkpoint").mkdir()
        loaded.model.save_pretrained(tmp / "checkpoint")
        loaded.tokenizer.save_pretrained(tmp / "checkpoint")
        losses.to_csv(tmp / "loss_log.csv", index=False, float_format="%.8g")
        probes.to_csv(tmp / "probes.csv", index=False, float_format="%.8g")
        timings["save_seconds"] = time.perf_counter() - t0
        timings["total_seconds"] = time.perf_counter() - started
        manifest = _manifest(model, loaded, cfg, inputs, baseline, timings)
        (tmp / MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
        run = FinetuneRun(Path(out), manifest, losses, probes, results)
        _draw(run, inputs.baseline, tmp)
    return run


@dataclass
class _Inputs:
    """Everything a run needs besides the weights, checked."""

    device: torch.device
    source: CausalSource
    where: str | list[int]
    split: CorpusSplit
    blocks: torch.Tensor  # [n_blocks, seq_len] training token ids
    heldout: list[TokenSequence]
    baseline: FinetuneRun | None


def _prepare(model: str, out: Path, cfg: FinetuneSettings, baseline: str | Path | None, device: str,
             trust_remote_code: bool) -> _Inputs:
    """Check every input against the corpus, tokenizer and architecture, without loading weights."""
    check_out(out)
    base = None
    if baseline is not None:
        if Path(baseline).resolve() == out.resolve():
            raise CondenseError("--baseline and --out are the same folder; write the new run elsewhere")
        base = load_finetune(baseline)
    dev = resolve_device(device)
    split = split_corpus(cfg.corpus, cfg.text_field, cfg.heldout)
    src = resolve_causal_source(model, cfg.init, trust_remote_code)
    where = cfg.where_spec(int(src.config.num_hidden_layers))
    positions = getattr(src.config, "max_position_embeddings", None)
    if positions and cfg.seq_len > positions:
        raise CondenseError(f"--seq-len {cfg.seq_len} exceeds the {positions} positions of {model!r}; lower it")
    blocks = pack_blocks(split.train, src.tokenizer, cfg.seq_len)
    heldout = heldout_sequences(split.heldout, src.tokenizer, cfg.seq_len, cfg.probe_seqs)
    vocab = int(src.config.vocab_size)
    top = max(int(blocks.max()), max(max(s.input_ids) for s in heldout))
    if top >= vocab:
        raise CondenseError(f"the tokenizer of {model!r} gives token id {top}, beyond the model's vocabulary ({vocab})")
    return _Inputs(dev, src, where, split, blocks, heldout, base)


def _train(loaded: LoadedModel, cfg: FinetuneSettings, inputs: _Inputs, tmp: Path, timings: dict[str, float],
           quiet: bool) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, ProbeResult]]:
    """The training loop with its probes. Returns (loss log, probe table, {step: ProbeResult})."""
    model, dev = loaded.model, inputs.device
    probe_steps = set(cfg.probe_steps())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = block_batches(inputs.blocks, cfg.batch_size, cfg.seed)
    hook = None
    if cfg.dispersion != "none":
        hook = attach_dispersion(model, inputs.where, DispersionLoss(cfg.dispersion, seed=cfg.seed))
    loss_rows: list[dict[str, float]] = []
    probe_rows: list[dict[str, float]] = []
    results: dict[int, ProbeResult] = {}
    probe_seconds = 0.0

    def probe_now(step: int) -> None:
        nonlocal probe_seconds
        t0 = time.perf_counter()
        result, loss = _probe(loaded, cfg, inputs.split, inputs.heldout, step)
        result.save(probe_folder(tmp, step))
        results[step] = result
        probe_rows.append({"step": step, "heldout_lm_loss": loss, "mean_cos_last_half": result.trend["last_half"],
                           "mean_cos_last": float(result.layers["mean_cos"].iloc[-1]),
                           "spearman": result.trend["spearman"], "kendall": result.trend["kendall"]})
        probe_seconds += time.perf_counter() - t0
        if not quiet:
            tqdm.write(f"step {step}: held-out LM loss {loss:.4f}, last-half mean cos {result.trend['last_half']:.4f}")

    torch.manual_seed(cfg.seed)  # dropout
    started = time.perf_counter()
    try:
        probe_now(0)
        for step in tqdm(range(1, cfg.steps + 1), desc="training", unit="step", disable=quiet, leave=False):
            lr = cfg.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids = next(batches).to(dev)
            logits = model(input_ids=ids).logits
            lm = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            dispersion = hook.loss() if hook is not None else None
            total = lm + cfg.coeff * dispersion if dispersion is not None else lm
            if not torch.isfinite(total):
                raise CondenseError(f"the loss became {float(total)} at step {step}; lower --lr or --coeff")
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_rows.append({"step": step, "lm_loss": lm.item(),
                              "dispersion_loss": dispersion.item() if dispersion is not None else math.nan,
                              "total_loss": total.item(), "lr": lr})
            if step in probe_steps:
                probe_now(step)
    finally:
        if hook is not None:
            hook.remove()
    model.eval()
    timings["probe_seconds"] = probe_seconds
    timings["train_seconds"] = time.perf_counter() - started - probe_seconds
    return (pd.DataFrame(loss_rows, columns=LOSS_COLUMNS), pd.DataFrame(probe_rows, columns=PROBE_COLUMNS), results)


def _probe(loaded: LoadedModel, cfg: FinetuneSettings, split: CorpusSplit, heldout: list[TokenSequence],
           step: int) -> tuple[ProbeResult, float]:
    """Held-out probe and LM loss of the model as it is after ``step`` optimizer steps."""
    model = loaded.model
    dev = next(model.parameters()).device
    model.eval()
    # Probing must not move the training RNG, so the loss log does not depend on the probe schedule.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        loss = heldout_lm_loss(model, heldout, loaded.tokenizer, cfg.batch_size)
        settings = ProbeSettings(corpus=cfg.corpus, text_field=cfg.text_field, num_seqs=cfg.probe_seqs,
                                 max_length=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed)
        result = probe_loaded(probe_view(loaded, step), settings, documents=iter(split.heldout), quiet=True)
    model.train()
    return result, loss


@torch.no_grad()
def heldout_lm_loss(model: torch.nn.Module, sequences: list[TokenSequence], tokenizer, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats per predicted token) of a causal LM over ``sequences``.

    Right-padded batches of ``batch_size``: padding is never a target, and never context for a
    real token. Token-weighted over all sequences; float32 logits, float64 accumulation.
    """
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    total, count = 0.0, 0
    for lo in range(0, len(sequences), batch_size):
        chunk = sequences[lo: lo + batch_size]
        width = max(len(s.input_ids) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, s in enumerate(chunk):
            ids[r, : len(s.input_ids)] = torch.tensor(s.input_ids)
            attention[r, : len(s.input_ids)] = 1
        ids, attention = ids.to(dev), attention.to(dev)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        valid = attention[:, 1:].flatten().bool()
        total += float(nll[valid].double().sum())
        count += int(valid.sum())
    return total / count


def _manifest(model: str, loaded: LoadedModel, cfg: FinetuneSettings, inputs: _Inputs,
              baseline: str | Path | None, timings: dict[str, float]) -> dict[str, Any]:
    import transformers

    from condense import __version__

    split, blocks, heldout = inputs.split, inputs.blocks, inputs.heldout
    trained_tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    return {
        "format": FINETUNE_FORMAT,
        "model": model,
        "info": loaded.info,
        "settings": asdict(cfg),
        "dispersion_blocks": inputs.where if cfg.dispersion != "none" else None,
        "probe_steps": cfg.probe_steps(),
        "data": {
            "train_documents": len(split.train),
            "heldout_documents": len(split.heldout),
            "heldout_first_document": split.heldout[0].name,
            "train_blocks": int(blocks.shape[0]),
            "train_tokens": int(blocks.numel()),
            "epochs": round(trained_tokens / blocks.numel(), 4),
            "heldout_sequences": len(heldout),
            "heldout_tokens": int(sum(len(s.input_ids) for s in heldout)),
        },
        "optimizer": {"name": "AdamW", "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip,
                      "schedule": "linear warm-up over max(1, steps // 10) steps, then constant"},
        "baseline": str(baseline) if baseline is not None else None,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": {"condense": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }


def _draw(run: FinetuneRun, base: FinetuneRun | None, folder: Path) -> None:
    import matplotlib.pyplot as plt

    from condense.plotting.steps import steps_figure

    for name, runs in (("steps.png", [run]), ("compare.png", [base, run] if base else None)):
        if runs:
            fig = steps_figure(runs)
            fig.savefig(folder / name, dpi=150, bbox_inches="tight")
            plt.close(fig)
