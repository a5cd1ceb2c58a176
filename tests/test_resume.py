"""A real SIGINT/SIGTERM mid-run leaves a checkpoint (not a run folder); --resume gives identical numbers;
`condense rerun` repeats a run from its run.json."""

import signal
import subprocess

import pytest

from tests.interrupt import interrupt_when_probing
from tests.test_cli import run

ARGS = ["--num-seqs", "40", "--max-length", "128", "--batch-size", "1", "--spectrum-seqs", "40"]


def start_and_interrupt(args, sig) -> subprocess.CompletedProcess:
    """Start `condense probe`, send ``sig`` once the progress bar has moved, wait for the exit."""
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
