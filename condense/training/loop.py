"""The finetune training loop: seeded AdamW steps, held-out probes, reporting, checkpoints, resume.

Each step's loss is the next-token cross-entropy of a batch of packed blocks plus ``coeff``
times the dispersion loss. After step 0 (before training), every ``probe_every`` steps and the
last step, the model is probed on the held-out documents and its held-out LM loss measured;
probing runs on forked random generators, so the loss log does not depend on the probe schedule.
Every ``checkpoint_every`` seconds, and when SIGINT/SIGTERM asks to stop, the state is saved
(:mod:`.resume`); a resumed run repeats exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from condense.dispersion import DispersionLoss, attach_dispersion
from condense.errors import CondenseError
from condense.models import LoadedModel
from condense.probing.checkpoint import stop_requests
from condense.probing.corpus import TokenSequence
from condense.probing.probe import ProbeSettings, probe_loaded
from condense.results import ProbeResult
from condense.training.data import CorpusSplit, block_batches
from condense.training.model import CausalSource, probe_view
from condense.training.monitor import PROBE_COLUMNS, condensation_scalars, heldout_lm_loss, probe_row
from condense.training.reporting import TrainingReporter
from condense.training.resume import Checkpointer, FinetuneInterrupted
from condense.training.settings import FinetuneSettings

__all__ = ["LOSS_COLUMNS", "TrainingInputs", "TrainingOutcome", "train"]

LOSS_COLUMNS = ["step", "lm_loss", "dispersion_loss", "total_loss", "lr"]


@dataclass
class TrainingInputs:
    """Everything a run needs besides the weights, checked."""

    device: torch.device
    source: CausalSource
    where: str | list[int]
    split: CorpusSplit
    blocks: torch.Tensor  # [n_blocks, seq_len] training token ids
    heldout: list[TokenSequence]
    baseline: Any  # FinetuneRun | None


@dataclass
class TrainingOutcome:
    """The loss log, the probes table, {step: ProbeResult}, timings, and the resumed step (or None)."""

    losses: pd.DataFrame
    probes: pd.DataFrame
    results: dict[int, ProbeResult]
    timings: dict[str, float]
    resumed_from_step: int | None


def train(loaded: LoadedModel, cfg: FinetuneSettings, inputs: TrainingInputs, checkpointer: Checkpointer,
          reporter: TrainingReporter, state: dict[str, Any] | None = None, quiet: bool = False) -> TrainingOutcome:
    """Train ``loaded.model`` for ``cfg.steps`` steps (from ``state``'s step when resuming).

    Steps are logged to ``reporter`` as ``loss``, ``lm_loss``, ``dispersion_loss``,
    ``learning_rate``; probes as ``eval_`` + :func:`condensation_scalars`. Raises
    FinetuneInterrupted (after saving) on SIGINT/SIGTERM, CondenseError on a non-finite loss.
    """
    model, dev = loaded.model, inputs.device
    probe_steps = set(cfg.probe_steps())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dispersion = DispersionLoss(cfg.dispersion, seed=cfg.seed) if cfg.dispersion != "none" else None
    if state is None:
        torch.manual_seed(cfg.seed)  # dropout
        run = {"step": 0, "loss_rows": [], "probe_rows": [], "results": {},
               "timings": {"loop_seconds": 0.0, "probe_seconds": 0.0}}
    else:
        run = _restore(state, model, optimizer, dispersion)
    segment = [time.perf_counter()]  # start of the loop time not yet added to run["timings"]

    def clock() -> None:
        now = time.perf_counter()
        run["timings"]["loop_seconds"] += now - segment[0]
        segment[0] = now

    def probe_now(step: int) -> None:
        t0 = time.perf_counter()
        result, loss = _probe(loaded, cfg, inputs, step)
        run["results"][step] = result
        run["probe_rows"].append(probe_row(step, result, loss))
        reporter.log({f"eval_{k}": v for k, v in condensation_scalars(result, loss).items()}, step)
        run["timings"]["probe_seconds"] += time.perf_counter() - t0
        if not quiet:
            tqdm.write(f"step {step}: held-out LM loss {loss:.4f}, last-half mean cos {result.trend['last_half']:.4f}")

    def save() -> None:
        clock()
        checkpointer.save({**run, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "rng": _rng_states(dev, dispersion)})

    batches = block_batches(inputs.blocks, cfg.batch_size, cfg.seed, start=run["step"])
    hook = attach_dispersion(model, inputs.where, dispersion) if dispersion is not None else None
    model.train()
    checkpointer.start()
    try:
        with stop_requests() as stop:
            if run["step"] in probe_steps and run["step"] not in run["results"]:
                probe_now(run["step"])  # step 0, or a probe that a signal interrupted
            for step in tqdm(range(run["step"] + 1, cfg.steps + 1), desc="training", unit="step", disable=quiet,
                             leave=False, initial=run["step"], total=cfg.steps):
                row = _step(model, optimizer, batches, hook, cfg, step, dev)
                run["loss_rows"].append(row)
                run["step"] = step
                reporter.log({"loss": row["total_loss"], "lm_loss": row["lm_loss"], "learning_rate": row["lr"],
                              **({"dispersion_loss": row["dispersion_loss"]} if hook is not None else {})}, step)
                if step in probe_steps:
                    try:
                        probe_now(step)
                    except KeyboardInterrupt:  # the probe's own signal handler turned a signal into this
                        stop.signal_name = stop.signal_name or "SIGINT"
                unfinished = step < cfg.steps or (step in probe_steps and step not in run["results"])
                if stop.signal_name and unfinished:
                    save()
                    raise FinetuneInterrupted(f"{stop.signal_name}: stopped after step {step} of {cfg.steps}; "
                                              "repeat the same command with --resume to continue")
                if checkpointer.due() and step < cfg.steps:
                    save()
    finally:
        if hook is not None:
            hook.remove()
    model.eval()
    clock()
    timings = {"train_seconds": run["timings"]["loop_seconds"] - run["timings"]["probe_seconds"],
               "probe_seconds": run["timings"]["probe_seconds"]}
    probes = pd.DataFrame(run["probe_rows"], columns=PROBE_COLUMNS).sort_values("step", ignore_index=True)
    return TrainingOutcome(pd.DataFrame(run["loss_rows"], columns=LOSS_COLUMNS), probes, run["results"], timings,
                           state["step"] if state is not None else None)


def _step(model, optimizer, batches, hook, cfg: FinetuneSettings, step: int, dev: torch.device) -> dict[str, float]:
    """One optimizer step; its row of the loss log."""
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
    return {"step": step, "lm_loss": lm.item(),
            "dispersion_loss": dispersion.item() if dispersion is not None else math.nan,
            "total_loss": total.item(), "lr": lr}


def _probe(loaded: LoadedModel, cfg: FinetuneSettings, inputs: TrainingInputs, step: int) -> tuple[ProbeResult, float]:
    """Held-out probe and LM loss of the model as it is after ``step`` optimizer steps."""
    model = loaded.model
    dev = inputs.device
    model.eval()
    # Probing must not move the training RNG, so the loss log does not depend on the probe schedule.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        loss = heldout_lm_loss(model, inputs.heldout, loaded.tokenizer, cfg.batch_size)
        settings = ProbeSettings(corpus=cfg.corpus, text_field=cfg.text_field, num_seqs=cfg.probe_seqs,
                                 max_length=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed)
        result = probe_loaded(probe_view(loaded, step), settings, documents=iter(inputs.split.heldout), quiet=True)
    model.train()
    return result, loss


def _rng_states(dev: torch.device, dispersion: DispersionLoss | None) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "dispersion": dispersion.generator.get_state() if dispersion is not None else None}


def _restore(state: dict[str, Any], model, optimizer, dispersion: DispersionLoss | None) -> dict[str, Any]:
    """Put the saved weights, optimizer and generators back; the run's logs so far."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], next(model.parameters()).device)
    if dispersion is not None:
        dispersion.generator.set_state(rng["dispersion"])
    return {k: state[k] for k in ("step", "loss_rows", "probe_rows", "results", "timings")}
