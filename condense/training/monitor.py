"""Condensation while training: probe held-out texts with the model as it is at a step, as scalars.

- :func:`condensation_scalars`: the numbers a training dashboard plots, from one ProbeResult.
- :func:`heldout_lm_loss`: next-token loss of a causal LM on the same held-out sequences.
- :class:`CondensationMonitor`: probes a model object in place at a given step, keeps the
  history, optionally saves each probe as a run folder and a steps figure; the engine of
  :class:`condense.training.CondensationCallback` and the function for hand-written loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from condense.metrics.trend import last_layers_means
from condense.models import from_memory, probing_mode, unwrap_model
from condense.probing.corpus import TokenSequence, build_sequences, is_corpus_spec, read_documents, texts_corpus
from condense.probing.probe import ProbeSettings, probe_loaded
from condense.results import ProbeResult
from condense.results.atomic import atomic_file

__all__ = ["PROBE_COLUMNS", "ProbeHistory", "CondensationMonitor", "condensation_scalars", "probe_row",
           "heldout_lm_loss", "is_causal_lm"]

PROBE_COLUMNS = ["step", "heldout_lm_loss", "mean_cos_last_half", "mean_cos_last", "spearman", "kendall"]


def condensation_scalars(result: ProbeResult, lm_loss: float | None = None, per_layer: bool = True,
                         prefix: str = "condense/") -> dict[str, float]:
    """The scalars of one probe, keyed for a training logger (TensorBoard tags, W&B keys).

    ``{prefix}mean_cos_last_half`` (the trend's ``last_half``: mean of ``mean_cos`` over the last
    ``max(1, n // 2)`` of the ``n`` probed layers), ``{prefix}spearman``, ``{prefix}kendall``
    (depth trend of ``mean_cos``), ``{prefix}cone_half_angle_deg_last_half`` (mean of
    ``cone_half_angle_mean_deg`` over the same layers); with ``per_layer`` also
    ``{prefix}mean_cos/layer_NN`` and ``{prefix}cone_half_angle_deg/layer_NN`` for every probed
    layer (NN = hidden-state index, two digits or more); with ``lm_loss``
    ``{prefix}heldout_lm_loss``. A NaN (e.g. Spearman of constant means) stays NaN.
    """
    table = result.layers
    cone = table["cone_half_angle_mean_deg"].to_numpy(dtype=float)
    out = {f"{prefix}mean_cos_last_half": float(result.trend["last_half"]),
           f"{prefix}spearman": float(result.trend["spearman"]),
           f"{prefix}kendall": float(result.trend["kendall"]),
           f"{prefix}cone_half_angle_deg_last_half": last_layers_means(cone)["last_half"]}
    if lm_loss is not None:
        out[f"{prefix}heldout_lm_loss"] = float(lm_loss)
    if per_layer:
        for layer, mean_cos, angle in zip(table["layer"], table["mean_cos"], cone):
            out[f"{prefix}mean_cos/layer_{int(layer):02d}"] = float(mean_cos)
            out[f"{prefix}cone_half_angle_deg/layer_{int(layer):02d}"] = float(angle)
    return out


def probe_row(step: int, result: ProbeResult, lm_loss: float | None) -> dict[str, float]:
    """One row of a probes table (:data:`PROBE_COLUMNS`): the step and its summary numbers."""
    return {"step": step, "heldout_lm_loss": math.nan if lm_loss is None else lm_loss,
            "mean_cos_last_half": result.trend["last_half"], "mean_cos_last": float(result.layers["mean_cos"].iloc[-1]),
            "spearman": result.trend["spearman"], "kendall": result.trend["kendall"]}


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Whether ``model`` (PEFT/DDP unwrapped) is one of transformers' causal-LM classes."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ([v] if isinstance(v, str) else v)}
    return type(unwrap_model(model)).__name__ in names


@torch.no_grad()
def heldout_lm_loss(model: torch.nn.Module, sequences: list[TokenSequence], tokenizer, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats per predicted token) of a causal LM over ``sequences``.

    Right-padded batches of ``batch_size``: padding is never a target, and never context for a
    real token. Token-weighted over all sequences; float32 logits, float64 accumulation.
    """
    dev = model.get_input_embeddings().weight.device
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
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten().to(logits.device), reduction="none")
        valid = attention[:, 1:].flatten().bool().to(logits.device)
        total += float(nll[valid].double().sum())
        count += int(valid.sum())
    return total / count


@dataclass
class ProbeHistory:
    """The probes of one training run: ``probes`` (one row per probe, :data:`PROBE_COLUMNS`),
    ``results`` ({step: ProbeResult}) and a ``label`` for figures (what ``steps_figure`` draws)."""

    label: str = ""
    probes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBE_COLUMNS))
    results: dict[int, ProbeResult] = field(default_factory=dict)


class CondensationMonitor:
    """Probe held-out texts with a model object as it is at a training step.

    ``texts``: a list of strings, a ``datasets.Dataset`` (column ``text_field``) or one of its
    columns, or a corpus name or file. ``tokenizer``: the model's (or pass one per call).
    Settings are :class:`condense.ProbeSettings` fields; the monitor's defaults differ in
    ``spectrum_seqs=0`` (a training curve does not need the spectral columns; they cost two
    eigendecompositions per sequence and layer). ``lm_loss``: also measure the held-out LM loss
    on the same sequences when the model is a causal LM. ``per_layer``: per-layer scalars too.
    ``save_dir``: save each probe as the run folder ``save_dir/step_NNNNNN``, keep
    ``save_dir/probes.csv`` current, and draw ``save_dir/steps.png`` in :meth:`finish`.

    ``monitor(model, step)`` probes (in eval mode, restored after; nothing between calls) and
    returns :func:`condensation_scalars`. The texts and settings are checked when the monitor is
    made: CondenseError for an empty text list or a bad setting.
    """

    def __init__(self, texts: Any, *, tokenizer: Any = None, name: str | None = None, lm_loss: bool = True,
                 per_layer: bool = True, save_dir: str | Path | None = None, text_field: str = "text",
                 **settings: Any) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.lm_loss = lm_loss
        self.per_layer = per_layer
        self.save_dir = Path(save_dir) if save_dir is not None else None
        if is_corpus_spec(texts):
            self._texts = None
            self.settings = ProbeSettings(corpus=str(texts), text_field=text_field, **{"spectrum_seqs": 0, **settings})
            self.settings.validate()
            next(read_documents(self.settings.corpus, text_field), None)  # a bad corpus fails now, not at step N
        else:
            self._texts = texts_corpus(texts, text_field, settings.get("shuffle", False), settings.get("seed", 0))
            self.settings = ProbeSettings(corpus=self._texts.label, text_field=text_field,
                                          **{"spectrum_seqs": 0, **settings})
            self.settings.validate()
        self.history = ProbeHistory(label=name or "")
        self._verified: torch.nn.Module | None = None  # the model whose hidden states were checked

    def _documents(self):
        if self._texts is not None:
            return iter(self._texts.documents)
        cfg = self.settings
        return read_documents(cfg.corpus, cfg.text_field, cfg.shuffle, cfg.seed)

    def __call__(self, model: torch.nn.Module, step: int, tokenizer: Any = None, save: bool = True) -> dict[str, float]:
        """Probe ``model`` (in place) as the state after ``step`` optimizer steps; return its scalars.

        ``save=False`` skips the run folder (on processes other than the main one).
        """
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        loaded = from_memory(model, tokenizer, self.name, verify=self._verified is not model)
        self._verified = model
        base = loaded.info["model"]
        loaded.info.update(model=f"{base}@step{step}", training_step=step)
        self.history.label = self.history.label or base
        with probing_mode(model):
            result = probe_loaded(loaded, self.settings, documents=self._documents(), quiet=True)
            loss = None
            if self.lm_loss and is_causal_lm(model):
                cfg = self.settings
                sequences = build_sequences(self._documents(), tokenizer, cfg.max_length, cfg.num_seqs)
                loss = heldout_lm_loss(unwrap_model(model), sequences, tokenizer,
                                       cfg.batch_size if isinstance(cfg.batch_size, int) else 8)
        if self._texts is not None:
            result.run["corpus_texts"] = self._texts.record
        return self.record(step, result, loss, save)

    def record(self, step: int, result: ProbeResult, lm_loss: float | None = None, save: bool = True) -> dict[str, float]:
        """Add a probe made elsewhere to the history (and ``save_dir``); return its scalars."""
        self.history.results[step] = result
        row = pd.DataFrame([probe_row(step, result, lm_loss)], columns=PROBE_COLUMNS)
        probes = self.history.probes
        self.history.probes = (row if probes.empty else pd.concat([probes[probes["step"] != step], row])
                               ).sort_values("step", ignore_index=True)
        if self.save_dir is not None and save:
            result.save(self.save_dir / f"step_{step:06d}")
            with atomic_file(self.save_dir / "probes.csv") as tmp:
                self.history.probes.to_csv(tmp, index=False, float_format="%.8g")
        return condensation_scalars(result, lm_loss, self.per_layer)

    def finish(self) -> Path | None:
        """Draw ``save_dir/steps.png`` (heatmaps over the probe steps and the curves); its path, or
        None without ``save_dir`` or probes."""
        if self.save_dir is None or not self.history.results:
            return None
        from condense.api import save_figure
        from condense.plotting.steps import steps_figure

        return save_figure(steps_figure([self.history], labels=[self.history.label]), self.save_dir / "steps.png",
                           dpi=150)
