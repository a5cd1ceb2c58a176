"""A real SIGINT/SIGTERM mid-run leaves a checkpoint (not a run folder); so does a SIGKILL after a periodic
checkpoint; --resume gives identical numbers; `condense rerun` repeats a run from its run.json."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from condense.probing.checkpoint import CheckpointPlan
from condense.errors import CondenseError

from tests.interrupt import interrupt_when_probing
from tests.paced import paced_argv, wait_for_marker
from tests.test_cli import ENV, run

ARGS = ["--num-seqs", "6", "--max-length", "128", "--batch-size", "1", "--spectrum-seqs", "6"]


def start_and_interrupt(args, sig) -> subprocess.CompletedProcess:
    """Start `condense probe`, send ``sig`` while it waits before its second batch, wait for the exit."""
    return interrupt_when_probing(["probe", *args], sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_matches_uninterrupted(tiny_models, tmp_path, sig):
    model = tiny_models["llama"]
    whole = run("probe", model, *ARGS, "--out", tmp_path / "whole", "-q")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    stopped = start_and_interrupt([model, *ARGS, "--out", out], sig)
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1].split("\r")[-1]
    assert "stopped after" in last and "--resume" in last and "Traceback" not in stopped.stderr
    assert not out.exists()  # nothing that looks like a finished run
    checkpoint = tmp_path / ".cut.resume.pt"
    assert checkpoint.exists()
    resumed = run("probe", model, *ARGS, "--out", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "layers.csv").read_bytes() == (tmp_path / "whole" / "layers.csv").read_bytes()
    assert not checkpoint.exists()
    assert_same_corpus_level(out, tmp_path / "whole")


def assert_same_corpus_level(folder, whole) -> None:
    """The cross-text columns and the token sample (columns and density) survived the resume unchanged."""
    header = (folder / "layers.csv").read_text().splitlines()[0].split(",")
    assert "cross_mean_cos" in header and "rogue_dim_1" in header and "isoscore" in header
    with np.load(folder / "histograms.npz") as a, np.load(whole / "histograms.npz") as b:
        np.testing.assert_array_equal(a["cross_density"], b["cross_density"])
    resumed, uninterrupted = (json.loads((f / "run.json").read_text())["corpus_sample"] for f in (folder, whole))
    for record in (resumed, uninterrupted):
        assert record.pop("finalize_seconds") > 0  # a time: the one entry that may differ
    assert resumed == uninterrupted and resumed["k"] > 0


def test_resume_refuses_a_checkpoint_from_other_settings(tiny_models, tmp_path):
    model = tiny_models["llama"]
    stopped = start_and_interrupt([model, *ARGS, "--out", tmp_path / "r"], signal.SIGINT)
    assert stopped.returncode == 130
    other = run("probe", model, *ARGS[:-2], "--spectrum-seqs", "3", "--out", tmp_path / "r", "--resume", "-q")
    assert other.returncode == 2 and "different model, corpus or settings" in other.stderr


def test_rerun_repeats_a_run(tiny_gpt2, tmp_path):
    first = run("probe", tiny_gpt2, "--num-seqs", 3, "--max-length", 32, "--layers", "0,2", "--out", tmp_path / "a", "-q")
    assert first.returncode == 0, first.stderr
    again = run("rerun", tmp_path / "a", "--out", tmp_path / "b", "-q")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "a" / "layers.csv").read_bytes() == (tmp_path / "b" / "layers.csv").read_bytes()


def test_sigkill_after_a_periodic_checkpoint_resumes_to_identical_numbers(tiny_models, tmp_path):
    model = tiny_models["llama"]
    args = [model, "--num-seqs", "6", "--max-length", "128", "--batch-size", "1", "--spectrum-seqs", "6"]
    whole = run("probe", *args, "--out", tmp_path / "whole", "-q")
    assert whole.returncode == 0, whole.stderr
    out, checkpoint, marker = tmp_path / "cut", tmp_path / ".cut.resume.pt", tmp_path / "saved"
    # an interval this short saves after every batch; the run waits after its first save (tests.paced)
    proc = subprocess.Popen(paced_argv(marker, "probe-save", ["probe", *args, "--out", out, "--checkpoint-every",
                                                              "0.001", "-q"]),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_marker(proc, marker)
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode(errors="replace")
    assert checkpoint.exists() and not out.exists()
    done = torch.load(checkpoint, map_location="cpu", weights_only=False)["done"]
    assert done == 1
    resumed = run("probe", *args, "--out", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "run.json").read_text())["resumed_from_sequence"] == done
    assert (out / "layers.csv").read_bytes() == (tmp_path / "whole" / "layers.csv").read_bytes()
    assert not checkpoint.exists()
    assert_same_corpus_level(out, tmp_path / "whole")


def test_checkpoint_plan_interval(monkeypatch, tmp_path):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    plan = CheckpointPlan(tmp_path / "c.pt", every=300)  # made at t=100
    now[0] = 150.0
    assert not plan.due()
    now[0] = 400.5
    assert plan.due()
    plan.saved()
    now[0] = 401.0
    assert not plan.due()
    assert not CheckpointPlan(tmp_path / "c.pt", every=0).due() and not CheckpointPlan(tmp_path / "c.pt", None).due()
    assert CheckpointPlan.of(str(tmp_path / "c.pt")).every == 300
    with pytest.raises(CondenseError, match="bad --checkpoint-every -1"):
        CheckpointPlan(tmp_path / "c.pt", every=-1)


def _edit_first_document(corpus) -> None:
    """Change the corpus file in place: same path, same number of documents, other words in the first."""
    lines = corpus.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({"text": "Edited: " + first["text"]})
    corpus.write_text("\n".join(lines) + "\n")


def test_resume_refuses_a_checkpoint_of_a_corpus_edited_in_place(tiny_gpt2, docs_jsonl, tmp_path, monkeypatch):
    """The checkpoint's key holds the token hash: the same corpus path with other contents is not resumed."""
    from condense.api import probe_to_folder
    from condense.probing.extract import HiddenStateReader

    real_read, reads = HiddenStateReader.read, []

    def read(self, *args, **kwargs):
        reads.append(1)
        if len(reads) == 3:
            raise RuntimeError("crashed")
        return real_read(self, *args, **kwargs)

    options = dict(corpus=str(docs_jsonl), num_seqs=6, max_length=40, batch_size=1, spectrum_seqs=0, quiet=True)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(HiddenStateReader, "read", read)
        with pytest.raises(RuntimeError, match="crashed"):
            probe_to_folder(str(tiny_gpt2), out, checkpoint_every=1e-9, **options)  # saves after every batch
    checkpoint = tmp_path / ".run.resume.pt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["done"] >= 1
    _edit_first_document(docs_jsonl)
    with pytest.raises(CondenseError, match="different model, corpus or settings"):
        probe_to_folder(str(tiny_gpt2), out, resume=True, **options)
    assert checkpoint.exists() and not out.exists()
