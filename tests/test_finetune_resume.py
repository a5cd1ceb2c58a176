"""condense finetune survives hard kills: periodic checkpoints beside the output, --resume to the same numbers,
and --report-to tensorboard whose scalars match the written logs, each step once."""

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from condense.errors import CondenseError
from condense.training import finetune
from condense.training.resume import Checkpointer, work_folder
from tests.paced import paced_argv, wait_for_marker
from tests.test_cli import ENV, run

STEPS = 12
ARGS = ["--steps", STEPS, "--seq-len", 32, "--batch-size", 2, "--probe-every", 5, "--probe-seqs", 2,
        "--dispersion", "angular_spread", "--coeff", 0.5, "--report-to", "tensorboard", "-q"]


def _start(args, marker, when) -> subprocess.Popen:
    """`condense finetune *args` that waits at the pause ``when`` (tests.paced) once it has written ``marker``."""
    return subprocess.Popen(paced_argv(marker, when, ["finetune", *args]), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_step(state_file) -> int:
    return torch.load(state_file, map_location="cpu", weights_only=False)["step"]


def test_sigkill_then_sigterm_then_resume_equals_an_uninterrupted_run(tiny_gpt2, docs_jsonl, tmp_path):
    common = [tiny_gpt2, "--corpus", docs_jsonl, *ARGS]
    out = tmp_path / "ft"
    state_file = work_folder(out) / "state.pt"

    # every step saves (--checkpoint-every 0.001): the first run waits after its first save until killed
    killed = _start([*common, "--out", out, "--checkpoint-every", 0.001], tmp_path / "saved", "train-save:0")
    try:
        wait_for_marker(killed, tmp_path / "saved")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(60)
    assert killed.returncode == -signal.SIGKILL
    first = _saved_step(state_file)
    assert first == 1 and not out.exists()  # nothing finished-looking

    # Resume, then stop politely (SIGTERM) while it waits after saving a later step: it saves the next
    # step and says how to go on.
    stopped = _start([*common, "--out", out, "--checkpoint-every", 0.001, "--resume"], tmp_path / "resaved",
                     f"train-stop:{first}")
    try:
        wait_for_marker(stopped, tmp_path / "resaved")
        stopped.send_signal(signal.SIGTERM)
        _, err = stopped.communicate(timeout=120)
    finally:
        stopped.kill()
        stopped.wait()
    assert stopped.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("condense: error: SIGTERM: stopped after step ")
    second = _saved_step(state_file)
    assert second == first + 2 and not out.exists()  # saved at first + 1, stopped at the next step

    done = run("finetune", *common, "--out", out, "--resume", "--checkpoint-every", 0.2)
    assert done.returncode == 0, done.stderr
    reference = run("finetune", *common, "--out", tmp_path / "whole", "--checkpoint-every", 0)
    assert reference.returncode == 0, reference.stderr

    whole = tmp_path / "whole"
    for name in ("loss_log.csv", "probes.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    for step in (0, 5, 10, 12):
        probe = f"probes/step_{step:06d}/layers.csv"
        assert (out / probe).read_bytes() == (whole / probe).read_bytes(), probe
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["resumed_from_step"] == second and manifest["report_to"] == ["tensorboard"]
    assert not work_folder(out).exists() and not work_folder(whole).exists()

    # TensorBoard (read with its own reader): every step once, despite three processes writing,
    # and the values of the written logs.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = pd.read_csv(out / "loss_log.csv")
    probes = pd.read_csv(out / "probes.csv")
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, STEPS + 1))
    assert [e.value for e in loss] == pytest.approx(log["total_loss"].tolist(), rel=1e-6)
    dispersion = [e.value for e in events.Scalars("train/dispersion_loss")]
    assert dispersion == pytest.approx(log["dispersion_loss"].tolist(), rel=1e-6)
    spearman = events.Scalars("eval/condense/spearman")
    assert [e.step for e in spearman] == [0, 5, 10, 12]
    heldout = [e.value for e in events.Scalars("eval/condense/heldout_lm_loss")]
    assert heldout == pytest.approx(probes["heldout_lm_loss"].tolist(), rel=1e-6)
    last = pd.read_csv(out / "probes" / "step_000012" / "layers.csv")
    assert events.Scalars("eval/condense/mean_cos/layer_03")[-1].value == pytest.approx(last["mean_cos"].iloc[3], rel=1e-6)


def test_a_checkpoint_is_never_silently_overwritten_or_mismatched(tiny_gpt2, docs_jsonl, tmp_path, monkeypatch):
    def no_weights(*_a, **_k):
        raise AssertionError("weights were loaded before the checkpoint was checked")

    monkeypatch.setattr(sys.modules["condense.training.finetune"], "load_causal_lm", no_weights)
    out = tmp_path / "ft"
    Checkpointer(work_folder(out), {"model": "something else"}, 0).save({"step": 3})
    common = dict(corpus=str(docs_jsonl), steps=4, seq_len=32, batch_size=2, probe_seqs=2, quiet=True)
    with pytest.raises(CondenseError, match="holds the checkpoint of an interrupted run; add --resume"):
        finetune(str(tiny_gpt2), out, **common)
    with pytest.raises(CondenseError, match="was made by a different model, corpus or settings"):
        finetune(str(tiny_gpt2), out, resume=True, **common)
    with pytest.raises(CondenseError, match="bad --checkpoint-every -1"):
        finetune(str(tiny_gpt2), tmp_path / "other", checkpoint_every=-1, **common)
    with pytest.raises(CondenseError, match="bad --report-to 'tensorbord'"):
        finetune(str(tiny_gpt2), tmp_path / "other", report_to="tensorbord", **common)
    assert not out.exists() and not (tmp_path / "other").exists()


def test_checkpoint_write_failure_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the work folder should be: the disk refuses
    with pytest.raises(CondenseError) as err:
        Checkpointer(blocker, {}, 1).save({"step": 1})
    assert "cannot write the finetune checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    checkpointer = Checkpointer(tmp_path / "work", {"k": 1}, 1)
    checkpointer.save({"step": 1})

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CondenseError) as err:
        checkpointer.save({"step": 2})
    assert "no space left" in str(err.value) and "state.pt" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.undo()
    assert checkpointer.load(torch.device("cpu"))["step"] == 1
    assert [f.name for f in (tmp_path / "work").iterdir()] == ["state.pt"]  # no temporary file left


def test_generator_states_round_trip():
    from condense.dispersion import DispersionLoss
    from condense.training.loop import _restore, _rng_states

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    dispersion = DispersionLoss(seed=3)
    torch.randperm(5, generator=dispersion.generator)
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1, "loss_rows": [],
             "probe_rows": [], "results": {}, "timings": {}, "rng": _rng_states(torch.device("cpu"), dispersion)}
    expected = (torch.rand(3), torch.randperm(9, generator=dispersion.generator))
    other = DispersionLoss(seed=3)
    _restore(saved, model, optimizer, other)
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.randperm(9, generator=other.generator), expected[1])


def test_resume_refuses_a_checkpoint_of_training_data_edited_in_place(tiny_gpt2, docs_jsonl, tmp_path, monkeypatch):
    """The key holds the hash of the training blocks: a corpus file whose training documents changed in
    place (the held-out ones, at its end, unchanged) is not resumed."""
    import json

    from condense.training import loop

    real_step, steps = loop._step, []

    def step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("crashed")
        return real_step(*args, **kwargs)

    common = dict(corpus=str(docs_jsonl), steps=4, seq_len=32, batch_size=2, probe_every=10, probe_seqs=2, quiet=True)
    out = tmp_path / "ft"
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_step", step)
        with pytest.raises(RuntimeError, match="crashed"):
            finetune(str(tiny_gpt2), out, checkpoint_every=1e-9, **common)
    assert _saved_step(work_folder(out) / "state.pt") == 2
    lines = docs_jsonl.read_text().splitlines()
    lines[0] = json.dumps({"text": "Edited: " + json.loads(lines[0])["text"]})
    docs_jsonl.write_text("\n".join(lines) + "\n")
    with pytest.raises(CondenseError, match="different model, corpus or settings"):
        finetune(str(tiny_gpt2), out, resume=True, checkpoint_every=1e-9, **common)


def test_checkpoint_interval_restarts_after_each_save(tmp_path, monkeypatch):
    """Saves come every `every` seconds of training: the interval restarts at start() and at each save
    (else every step after the first interval would save)."""
    import time

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    checkpointer = Checkpointer(tmp_path / "work", {"k": 1}, 300)
    now[0] = 250.0
    checkpointer.start()
    now[0] = 549.0
    assert not checkpointer.due()
    now[0] = 550.0
    assert checkpointer.due()
    checkpointer.save({"step": 1})
    now[0] = 551.0
    assert not checkpointer.due()
    now[0] = 850.0
    assert checkpointer.due() and checkpointer.saves == 1
    assert not Checkpointer(tmp_path / "other", {}, 0).due()
