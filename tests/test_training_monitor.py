"""Condensation while training: the Trainer callback, the monitor for hand-written loops, the reporter."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

import condense
from condense.errors import CondenseError
from condense.results import ProbeResult
from condense.training import CondensationCallback, CondensationMonitor, TrainingReporter, condensation_scalars

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PROBE = {"max_length": 32, "num_seqs": 3, "batch_size": 2}


def _texts():
    from pydoc_data.topics import topics

    return [t.strip() for t in topics.values() if t.strip()]


class _Blocks(torch.utils.data.Dataset):
    """Fixed 32-token blocks of builtin prose, labels = inputs (the model shifts them)."""

    def __init__(self, tokenizer, texts):
        self.ids = [tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in texts]
        self.ids = [i for i in self.ids if len(i) == 32]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = torch.tensor(self.ids[i])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _trainer(folder, tokenizer, out, report_to="none", cls=transformers.Trainer, **extra):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)  # dropout 0.1: training uses the RNG
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=4, per_device_train_batch_size=2, per_device_eval_batch_size=2,
        logging_steps=1, report_to=report_to, use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
        **{k: v for k, v in extra.items() if k in ("eval_strategy", "eval_steps")})
    texts = _texts()
    kwargs = {k: v for k, v in extra.items() if k not in ("eval_strategy", "eval_steps")}
    return cls(model=model, args=args, train_dataset=_Blocks(tokenizer, texts[:40]),
               eval_dataset=_Blocks(tokenizer, texts[40:46]), processing_class=tokenizer, **kwargs)


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_trainer_callback_logs_to_tensorboard_matching_the_run_folders(tiny_gpt2, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    heldout = _texts()[-6:]
    plain = _trainer(tiny_gpt2, tokenizer, tmp_path / "plain")
    plain.train()
    trainer = _trainer(tiny_gpt2, tokenizer, tmp_path / "watched", report_to="tensorboard")
    callback = CondensationCallback(heldout, every=3, save_dir=tmp_path / "probes", **PROBE).attach(trainer)
    trainer.train()
    # Probing runs in eval mode on forked generators: training (with dropout) is exactly as without it.
    assert _losses(trainer) == _losses(plain) and len(_losses(plain)) == 4

    assert callback.history.probes["step"].tolist() == [0, 3, 4]  # the start, every 3, and the last step
    written = pd.read_csv(tmp_path / "probes" / "probes.csv")
    assert written["step"].tolist() == [0, 3, 4] and (tmp_path / "probes" / "steps.png").stat().st_size > 10_000
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for step in (0, 3, 4):
        folder = tmp_path / "probes" / f"step_{step:06d}"
        layers = pd.read_csv(folder / "layers.csv")
        run = json.loads((folder / "run.json").read_text())
        assert run["training_step"] == step and run["model"].endswith(f"@step{step}")
        for _, row in layers.iterrows():
            layer = int(row["layer"])
            assert scalars[f"eval/condense/mean_cos/layer_{layer:02d}"][step] == pytest.approx(row["mean_cos"], rel=1e-6)
            assert scalars[f"eval/condense/cone_half_angle_deg/layer_{layer:02d}"][step] == pytest.approx(
                row["cone_half_angle_mean_deg"], rel=1e-6)
        for key in ("spearman", "kendall"):
            assert scalars[f"eval/condense/{key}"][step] == pytest.approx(run["trend"][key], rel=1e-6)
        assert scalars["eval/condense/mean_cos_last_half"][step] == pytest.approx(
            layers["mean_cos"].iloc[-2:].mean(), rel=1e-6)  # 4 entries: the last 2
        assert scalars["eval/condense/cone_half_angle_deg_last_half"][step] == pytest.approx(
            layers["cone_half_angle_mean_deg"].iloc[-2:].mean(), rel=1e-6)
        assert scalars["eval/condense/heldout_lm_loss"][step] == pytest.approx(
            written.set_index("step").loc[step, "heldout_lm_loss"], rel=1e-6)
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4]  # the Trainer's own logs sit beside them


def test_dispersion_trainer_probes_at_each_evaluation(tiny_gpt2, tokenizer, tmp_path):
    from condense.dispersion import DispersionTrainer

    trainer = _trainer(tiny_gpt2, tokenizer, tmp_path / "out", cls=DispersionTrainer, eval_strategy="steps",
                       eval_steps=2)
    # every=2 is due at the same steps as the evaluations: each step is probed once
    callback = CondensationCallback(_texts()[-6:], every=2, at_start=False, at_evaluate=True, per_layer=False,
                                    **PROBE).attach(trainer)
    trainer.train()
    assert callback.history.probes["step"].tolist() == [2, 4]
    logged = [h for h in trainer.state.log_history if "eval_condense/spearman" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert not any("eval_condense/mean_cos/layer_00" in h for h in logged)  # per_layer=False
    assert any("dispersion_loss" in h for h in trainer.state.log_history)


def test_monitor_in_a_hand_written_loop_equals_a_direct_probe(tiny_gpt2, tokenizer, tmp_path):
    heldout = _texts()[-6:]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    monitor = CondensationMonitor(heldout, tokenizer=tokenizer, name="tiny", **PROBE)
    reporter = TrainingReporter("tensorboard", tmp_path / "tb")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([tokenizer(heldout[0], truncation=True, max_length=16)["input_ids"]])
    model.train()
    reporter.log(monitor(model, 0), 0)
    for step in (1, 2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 2:
            reporter.log(monitor(model, step), step)
    reporter.close()
    direct = condense.probe(model, tokenizer=tokenizer, corpus=heldout, spectrum_seqs=0, quiet=True, **PROBE)
    assert monitor.history.results[2].layers.equals(direct.layers)  # the model as it is after step 2
    assert monitor.history.results[0].layers["mean_cos"].tolist() != direct.layers["mean_cos"].tolist()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/condense/spearman")] == [0, 2]
    assert monitor.history.label == "tiny" and monitor.history.results[2].run["model"] == "tiny@step2"
    # the held-out LM loss: token-weighted mean of the model's own loss on each probed sequence
    from condense.probing.corpus import Document, build_sequences

    sequences = build_sequences([Document(str(i), t) for i, t in enumerate(heldout)], tokenizer, 32, 3)
    model.eval()
    with torch.no_grad():
        losses = [(float(model(input_ids=torch.tensor([s.input_ids]), labels=torch.tensor([s.input_ids])).loss),
                   len(s.input_ids) - 1) for s in sequences]
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert monitor.history.probes.set_index("step").loc[2, "heldout_lm_loss"] == pytest.approx(expected, rel=1e-5)


def _result(mean_cos, cone, spearman=0.5, kendall=0.25) -> ProbeResult:
    layers = pd.DataFrame({"layer": np.arange(len(mean_cos)), "mean_cos": mean_cos, "cone_half_angle_mean_deg": cone})
    trend = {"spearman": spearman, "kendall": kendall, "last_half": float(np.mean(mean_cos[-(len(mean_cos) // 2):]))}
    return ProbeResult(layers, np.zeros((len(mean_cos), 128)), trend, {})


@pytest.mark.parametrize("source", ["texts", "corpus"])
def test_monitor_honours_a_users_spectrum_seqs(tiny_gpt2, tokenizer, source):
    """The monitor's own default is no spectrum (spectrum_seqs=0); a user's spectrum_seqs is kept, for texts
    in memory and for a corpus name alike, and gives the numbers of a direct probe."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    texts = _texts()[-6:] if source == "texts" else "builtin"
    default = CondensationMonitor(texts, tokenizer=tokenizer, **PROBE)
    default(model, 0, save=False)
    assert default.history.results[0].layers["mev"].isna().all()
    asked = CondensationMonitor(texts, tokenizer=tokenizer, spectrum_seqs=2, **PROBE)
    asked(model, 0, save=False)
    direct = condense.probe(model, tokenizer=tokenizer, corpus=texts, spectrum_seqs=2, quiet=True, **PROBE)
    got = asked.history.results[0].layers
    assert got["mev"].notna().all() and asked.settings.spectrum_seqs == 2
    np.testing.assert_allclose(got["mev"], direct.layers["mev"], rtol=1e-6)


def test_condensation_scalars_keys_and_values():
    cone = [80.0, 70.0, 60.0, 50.0, 40.0]  # 5 layers: the last half is the last 2
    scalars = condensation_scalars(_result([0.1, 0.2, 0.3, 0.4, 0.5], cone), lm_loss=2.5)
    assert scalars["condense/cone_half_angle_deg_last_half"] == pytest.approx(45.0)
    assert scalars["condense/mean_cos_last_half"] == pytest.approx(0.45)
    assert scalars["condense/spearman"] == 0.5 and scalars["condense/kendall"] == 0.25
    assert scalars["condense/heldout_lm_loss"] == 2.5
    assert scalars["condense/mean_cos/layer_03"] == 0.4 and scalars["condense/cone_half_angle_deg/layer_04"] == 40.0
    assert len(scalars) == 5 + 2 * 5
    twelve = condensation_scalars(_result(np.linspace(0, 1, 120), np.ones(120), spearman=math.nan), per_layer=True,
                                  prefix="x/")
    assert "x/mean_cos/layer_119" in twelve and math.isnan(twelve["x/spearman"])
    assert "x/heldout_lm_loss" not in twelve


def test_bad_callback_and_monitor_input(tiny_gpt2, tokenizer, tmp_path):
    texts = _texts()[-3:]
    for every in (0, -2, 1.5, True):
        with pytest.raises(CondenseError, match=f"bad every={every!r}"):
            CondensationCallback(texts, every=every)
    with pytest.raises(CondenseError, match="would never probe"):
        CondensationCallback(texts, at_start=False)
    with pytest.raises(CondenseError, match="empty collection of texts"):
        CondensationCallback([], every=2)
    with pytest.raises(CondenseError, match="unknown corpus"):
        CondensationMonitor(str(tmp_path / "missing.txt"))
    with pytest.raises(CondenseError, match="bad --max-length"):
        CondensationMonitor(texts, max_length=1)
    trainer = _trainer(tiny_gpt2, tokenizer, tmp_path / "out")
    trainer.add_callback(CondensationCallback(texts, every=2, **PROBE))  # not attached: cannot log
    with pytest.raises(CondenseError, match=r"attach\(trainer\)"):
        trainer.train()
    with pytest.raises(CondenseError, match="bad --report-to 'tensorbored'"):
        TrainingReporter("tensorbored", tmp_path / "tb")
