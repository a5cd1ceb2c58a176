"""``finetune``: train a causal LM with an optional dispersion loss, probing held-out text as it goes.

A plain, seeded AdamW loop (deterministic on CPU; see :mod:`.loop`): each step's loss is the
next-token cross-entropy of a batch of packed ``seq_len`` blocks, plus ``coeff`` times the
dispersion loss of the chosen blocks' outputs. At step 0, every ``probe_every`` steps and at the
end, the model is probed (the standard probe, pooled convention, every layer) on held-out
documents, and its LM loss on the same held-out sequences is measured. Losses and probes can go
to TensorBoard (or any integration transformers knows) as they happen; the state is saved
periodically beside the output folder (:mod:`.resume`), so a killed run resumes. Everything
lands atomically in one folder at the end (see :mod:`.run`).
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condense.errors import CondenseError
from condense.models import LoadedModel, resolve_device
from condense.probing.corpus import token_hash
from condense.training.data import heldout_sequences, pack_blocks, split_corpus
from condense.training.loop import TrainingInputs, TrainingOutcome, train
from condense.training.model import load_causal_lm, resolve_causal_source
from condense.training.reporting import TrainingReporter, report_to_names
from condense.training.resume import Checkpointer, run_key, work_folder
from condense.training.run import FINETUNE_FORMAT, MARKER, FinetuneRun, atomic_output, check_out, load_finetune, probe_folder
from condense.training.settings import DEFAULT_CHECKPOINT_SECONDS, FinetuneSettings

__all__ = ["finetune"]


def finetune(model: str, out: str | Path, *, baseline: str | Path | None = None, device: str = "auto",
             trust_remote_code: bool = False, quiet: bool = False, report_to: str | list[str] | None = "none",
             checkpoint_every: float = DEFAULT_CHECKPOINT_SECONDS, resume: bool = False,
             **settings: Any) -> FinetuneRun:
    """Fine-tune (``init="pretrained"``) or pre-train (``init="random"``) ``model`` and save into ``out``.

    ``model`` is anything ``condense probe`` accepts (alias, checkpoint folder, .gguf, hub id;
    with ``init="random"`` also a shipped config name such as ``gpt2``). Keyword ``settings``
    are the fields of :class:`FinetuneSettings` (``corpus``, ``dispersion``, ``coeff``,
    ``where``, ``steps``, ``lr``, ``batch_size``, ``seq_len``, ``seed``, ``probe_every``,
    ``probe_seqs``, ``heldout``, ...). ``baseline``: a previous finetune folder, drawn beside
    this run in ``compare.png``. ``report_to``: ``none``, ``tensorboard`` (event files in
    ``out/tensorboard``, written live in the work folder) or other transformers integrations.
    ``checkpoint_every``: seconds between checkpoints in the work folder ``.<out>.resume/``
    (0: only on SIGINT/SIGTERM); ``resume``: continue from that checkpoint. Every input is
    checked before the weights load; bad ones raise CondenseError. Returns the run as written
    (``FinetuneRun``, folder = ``out``).
    """
    started = time.perf_counter()
    try:
        cfg = FinetuneSettings(**settings)
    except TypeError as err:
        raise CondenseError(f"unknown finetune setting ({err})") from None
    cfg.validate()
    report_to_names(report_to)
    out = Path(out)
    inputs = _prepare(model, out, cfg, baseline, device, trust_remote_code)
    work = work_folder(out)
    checkpointer = Checkpointer(work, run_key(model, asdict(cfg), inputs.blocks, token_hash(inputs.heldout)),
                                checkpoint_every)
    state = None
    if checkpointer.exists():
        if not resume:
            raise CondenseError(f"{str(work)!r} holds the checkpoint of an interrupted run; add --resume to continue "
                                "it, or delete that folder to start over")
        state = checkpointer.load(torch.device("cpu"))
    else:
        shutil.rmtree(work / "tensorboard", ignore_errors=True)  # the logs of a run that failed for good
    loaded = load_causal_lm(inputs.source, inputs.device, cfg.seed)
    setup_seconds = time.perf_counter() - started
    reporter = TrainingReporter(report_to, work / "tensorboard", loaded.model, loaded.tokenizer,
                                purge_step=state["step"] + 1 if state else None)
    try:
        outcome = train(loaded, cfg, inputs, checkpointer, reporter, state, quiet)
    finally:
        reporter.close()
    timings = {"setup_seconds": setup_seconds, **outcome.timings}
    run = _write(out, model, loaded, cfg, inputs, baseline, outcome, timings, started,
                 {"report_to": report_to_names(report_to), "checkpoint_every_seconds": checkpointer.every,
                  "checkpoints_saved": checkpointer.saves, "checkpoint_seconds": round(checkpointer.seconds_saving, 3),
                  "resumed_from_step": outcome.resumed_from_step})
    checkpointer.remove()
    return run


def _write(out: Path, model: str, loaded: LoadedModel, cfg: FinetuneSettings, inputs: TrainingInputs,
           baseline: str | Path | None, outcome: TrainingOutcome, timings: dict[str, float], started: float,
           extra: dict[str, Any]) -> FinetuneRun:
    """Write the output folder atomically, with the live TensorBoard logs moved into it."""
    t0 = time.perf_counter()
    with atomic_output(out) as tmp:
        (tmp / "checkpoint").mkdir()
        loaded.model.save_pretrained(tmp / "checkpoint")
        loaded.tokenizer.save_pretrained(tmp / "checkpoint")
        outcome.losses.to_csv(tmp / "loss_log.csv", index=False, float_format="%.8g")
        outcome.probes.to_csv(tmp / "probes.csv", index=False, float_format="%.8g")
        for step, result in outcome.results.items():
            result.save(probe_folder(tmp, step))
        logs = work_folder(out) / "tensorboard"
        if logs.exists():
            shutil.copytree(logs, tmp / "tensorboard")
        timings["save_seconds"] = time.perf_counter() - t0
        timings["total_seconds"] = time.perf_counter() - started
        manifest = {**_manifest(model, loaded, cfg, inputs, baseline, timings), **extra}
        (tmp / MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
        run = FinetuneRun(out, manifest, outcome.losses, outcome.probes, outcome.results)
        _draw(run, inputs.baseline, tmp)
    return run


def _prepare(model: str, out: Path, cfg: FinetuneSettings, baseline: str | Path | None, device: str,
             trust_remote_code: bool) -> TrainingInputs:
    """Check every input against the corpus, tokenizer and architecture, without loading weights."""
    check_out(out)
    base = None
    if baseline is not None:
        if Path(baseline).resolve() == out.resolve():
            raise CondenseError("--baseline and --out are the same folder; write the new run elsewhere")
        base = load_finetune(baseline)
    dev = resolve_device(device)
    split = split_corpus(cfg.corpus, cfg.text_field, cfg.heldout)
    src = resolve_causal_source(model, cfg.init, trust_remote_code, cfg.revision)
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
    return TrainingInputs(dev, src, where, split, blocks, heldout, base)


def _manifest(model: str, loaded: LoadedModel, cfg: FinetuneSettings, inputs: TrainingInputs,
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
