"""`condense sweep`: spec parsing (TOML and YAML), local and Ray executors, skipping, failures, summary."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import condense.sweep
from condense.errors import CondenseError
from condense.probing.checkpoint import checkpoint_path_for, save_checkpoint
from condense.results import ProbeResult
from condense.sweep import SUMMARY_COLUMNS, load_spec, parse_spec, run_sweep
from tests.interrupt import interrupt_when_probing
from tests.paced import paced_argv, wait_for_marker
from tests.test_cli import ENV, run

SMALL = "num_seqs = 2\nmax_length = 16\nspectrum_seqs = 0\n"


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def not_a_checkpoint(tmp_path):
    folder = tmp_path / "notckpt"
    folder.mkdir()
    (folder / "readme.md").write_text("not a model")
    return folder


def test_local_grid_writes_runs_and_summary(tiny_models, docs_jsonl, tmp_path):
    spec = write(tmp_path / "grid.toml", f'models = ["{tiny_models["gpt2"]}", "{tiny_models["llama"]}"]\n'
                 f'corpora = ["{docs_jsonl}"]\n[settings]\n{SMALL}batch_size = [1, 2]\n')
    rows = run_sweep(load_spec(spec), tmp_path / "out", quiet=True, echo=lambda _: None)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and len(summary) == len(rows) == 4
    assert (summary["status"] == "ok").all() and (summary["error"] == "").all()
    assert list(summary["model"]) == [str(tiny_models["gpt2"])] * 2 + [str(tiny_models["llama"])] * 2
    folders = [os.path.basename(f) for f in summary["folder"]]
    # two runs per model and corpus: the names get a settings hash and stay distinct
    assert len(set(folders)) == 4 and all(f.startswith(("gpt2__docs.jsonl__", "llama__docs.jsonl__")) for f in folders)
    for row in summary.itertuples():
        result = ProbeResult.load(row.folder)
        assert result.run["settings"]["num_seqs"] == 2 and result.run["settings"]["corpus"] == str(docs_jsonl)
        assert row.spearman == pytest.approx(result.trend["spearman"], abs=1e-5)
        assert row.kendall == pytest.approx(result.trend["kendall"], abs=1e-5)
        assert row.last_half_mean_cos == pytest.approx(result.trend["last_half"], abs=1e-5)
    assert sorted(ProbeResult.load(f).run["settings"]["batch_size"] for f in summary["folder"]) == [1, 1, 2, 2]


def test_rerun_skips_finished_runs_and_redoes_changed_ones(tiny_models, docs_jsonl, tmp_path, monkeypatch):
    spec = write(tmp_path / "two.toml", f'models = ["{tiny_models["gpt2"]}", "{tiny_models["bert"]}"]\n'
                 f'corpora = ["{docs_jsonl}"]\n[settings]\n{SMALL}')
    out = tmp_path / "out"
    first = run_sweep(load_spec(spec), out, quiet=True, echo=lambda _: None)
    stamps = {r["folder"]: os.stat(os.path.join(r["folder"], "run.json")).st_mtime_ns for r in first}

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was probed again")

    monkeypatch.setattr(condense.sweep, "probe_to_folder", must_not_run)
    lines = []
    again = run_sweep(load_spec(spec), out, quiet=True, echo=lines.append)
    assert [r["status"] for r in again] == ["skipped", "skipped"] and all("skipped" in line for line in lines)
    assert all(os.stat(os.path.join(f, "run.json")).st_mtime_ns == t for f, t in stamps.items())
    assert [r["spearman"] for r in again] == [r["spearman"] for r in first]
    monkeypatch.undo()

    # a folder whose run.json records other settings is probed again; the other is still skipped
    changed = os.path.join(first[0]["folder"], "run.json")
    with open(changed) as f:
        meta = json.load(f)
    meta["settings"]["num_seqs"] = 3
    with open(changed, "w") as f:
        json.dump(meta, f)
    third = run_sweep(load_spec(spec), out, quiet=True, echo=lambda _: None)
    assert [r["status"] for r in third] == ["ok", "skipped"]
    assert ProbeResult.load(first[0]["folder"]).run["settings"]["num_seqs"] == 2


def test_failing_model_reported_and_others_finish_via_cli(tiny_gpt2, docs_jsonl, not_a_checkpoint, tmp_path):
    spec = write(tmp_path / "mixed.yaml", f"models: ['{not_a_checkpoint}', '{tiny_gpt2}']\ncorpora: ['{docs_jsonl}']\n"
                 "settings: {num_seqs: 2, max-length: 16, spectrum_seqs: 0}\n")
    p = run("sweep", spec, "--out", tmp_path / "out", "-q")
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        f"condense: 1 of 2 runs failed (errors in {tmp_path / 'out' / 'summary.csv'})")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["failed", "ok"]
    assert "is a folder but not a checkpoint" in summary["error"][0] and "\n" not in summary["error"][0]
    assert not os.path.exists(summary["folder"][0]) and os.path.exists(os.path.join(summary["folder"][1], "run.json"))
    assert "failed" in p.stdout and "gpt2__docs.jsonl" in p.stdout  # progress lines and the printed table


def test_toml_and_yaml_specs_expand_alike(tmp_path):
    toml = write(tmp_path / "s.toml", """
models = ["m1", "m2"]
[settings]
num_seqs = 4
max_length = [16, 32]
[resources]
num_cpus = 1
memory = "2GiB"
[[runs]]
model = "m3"
corpus = "c.txt"
settings = { init = "random", batch-size = 2 }
resources = { num_gpus = 1 }
""")
    yaml = write(tmp_path / "s.yaml", """
models: [m1, m2]
settings: {num_seqs: 4, max_length: [16, 32]}
resources: {num_cpus: 1, memory: 2GiB}
runs:
  - {model: m3, corpus: c.txt, settings: {init: random, batch-size: 2}, resources: {num_gpus: 1}}
""")
    runs = load_spec(toml)
    assert runs == load_spec(yaml)
    # [[runs]] entries sit on top of [settings], its grid included
    assert [(r.model, r.corpus, r.settings["max_length"]) for r in runs] == [
        ("m1", "builtin", 16), ("m1", "builtin", 32), ("m2", "builtin", 16), ("m2", "builtin", 32),
        ("m3", "c.txt", 16), ("m3", "c.txt", 32)]
    assert runs[-1].settings == {"num_seqs": 4, "max_length": 32, "init": "random", "batch_size": 2}
    assert runs[-1].resources == {"num_cpus": 1, "memory": "2GiB", "num_gpus": 1}
    assert runs[0].folder.startswith("m1__builtin__") and runs[-1].folder.startswith("m3-random__c.txt__")
    assert len({r.folder for r in runs}) == 6
    assert condense.sweep._ray_options(runs[-1].resources) == {"num_cpus": 1, "num_gpus": 1, "memory": 2 * 2**30}


BAD_SPECS = [
    ("broken.toml", "models = [", "cannot parse sweep spec"),
    ("broken.yaml", "models: [a, b\n", "cannot parse sweep spec"),
    ("empty.toml", "", "lists no runs"),
    ("empty.yaml", "", "lists no runs"),
    ("list.yaml", "- a\n- b\n", "must be a table of keys"),
    ("spec.json", "{}", "must end in .toml, .yaml or .yml"),
    ("unknown.toml", 'models = ["m"]\nmodel_list = ["x"]', "unknown key 'model_list' in sweep spec"),
    ("setting.toml", 'models = ["m"]\n[settings]\nnum_sequences = 4', "unknown setting 'num_sequences'"),
    ("value.toml", 'models = ["m"]\n[settings]\nnum_seqs = 0', "bad --num-seqs 0"),
    ("models.toml", "models = 3", "bad models"),
    ("corpora.toml", 'corpora = ["builtin"]', "corpora but no models"),
    ("memory.toml", 'models = ["m"]\n[resources]\nmemory = "lots"', "bad memory 'lots'"),
    ("gpus.toml", 'models = ["m"]\n[resources]\nnum_gpus = -1', "bad [resources] num_gpus = -1"),
    ("runkey.toml", '[[runs]]\nmodel = "m"\nlayer = "0"', "unknown key 'layer' in [[runs]] entry 1"),
    ("nomodel.toml", '[[runs]]\ncorpus = "builtin"', "bad [[runs]] entry 1 model"),
    ("twice.toml", 'models = ["m", "m"]', "lists one run twice"),
]


@pytest.mark.parametrize("name, text, message", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_error(tmp_path, name, text, message):
    with pytest.raises(CondenseError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_spec(write(tmp_path / name, text))
    assert "\n" not in str(info.value)


def test_bad_spec_cli_exit_2_nothing_written(tmp_path):
    p = run("sweep", write(tmp_path / "bad.toml", 'models = ["m"]\nfoo = 1\n'), "--out", tmp_path / "out")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [(
        f"condense: error: unknown key 'foo' in sweep spec '{tmp_path / 'bad.toml'}'; "
        "allowed: models, corpora, settings, resources, runs")]
    assert not (tmp_path / "out").exists()


def test_parse_spec_rejects_non_string_names():
    with pytest.raises(CondenseError, match="bad corpora"):
        parse_spec({"models": ["m"], "corpora": [1]})


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="pip install ray (the sweep extra) to test --executor ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_on_local_instance(local_ray, tiny_models, docs_jsonl, not_a_checkpoint, tmp_path, monkeypatch):
    spec = write(tmp_path / "ray.toml", f'models = ["{tiny_models["gpt2"]}", "{not_a_checkpoint}"]\n'
                 f'corpora = ["{docs_jsonl}"]\n[settings]\n{SMALL}[resources]\nnum_cpus = 1\nmemory = "200MB"\n'
                 f'[[runs]]\nmodel = "{tiny_models["qwen3"]}"\ncorpus = "{docs_jsonl}"\n')
    out = tmp_path / "out"

    def not_here(*args, **kwargs):
        raise AssertionError("probed in the driver, not in a Ray worker")

    monkeypatch.setattr(condense.sweep, "probe_to_folder", not_here)  # Ray workers import their own copy
    rows = run_sweep(load_spec(spec), out, executor="ray", echo=lambda _: None)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]  # spec order, whatever finished first
    assert "not a checkpoint" in rows[1]["error"]
    assert ProbeResult.load(rows[0]["folder"]).run["model_type"] == "gpt2"
    assert ProbeResult.load(rows[2]["folder"]).run["settings"]["num_seqs"] == 2
    assert local_ray.is_initialized()  # a cluster the sweep joined is left running
    again = run_sweep(load_spec(spec), out, executor="ray", echo=lambda _: None)
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped"]


SLOW_RUN = "num_seqs = 6\nmax_length = 128\nbatch_size = 1\nspectrum_seqs = 6\n"  # six batches: room to stop mid-run


def test_interrupted_sweep_resumes_the_partly_done_run(tiny_models, tmp_path):
    """Ctrl-C stops the whole sweep (exit 130) leaving the run's checkpoint; the next sweep continues the
    run from it to the numbers of an uninterrupted run."""
    model = tiny_models["llama"]
    spec = write(tmp_path / "one.toml", f'models = ["{model}"]\n[settings]\n{SLOW_RUN}')
    whole = run_sweep(load_spec(spec), tmp_path / "whole", quiet=True, echo=lambda _: None)[0]["folder"]
    out = tmp_path / "out"
    stopped = interrupt_when_probing(["sweep", spec, "--out", out], signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("condense: error: sweep interrupted during llama__builtin with 0 of 1 runs finished")
    assert "Traceback" not in stopped.stderr
    checkpoint = out / ".llama__builtin.resume.pt"
    assert checkpoint.exists() and not (out / "llama__builtin").exists() and not (out / "summary.csv").exists()
    lines = []
    rows = run_sweep(load_spec(spec), out, quiet=True, echo=lines.append)
    assert [r["status"] for r in rows] == ["ok"], lines
    resumed = ProbeResult.load(rows[0]["folder"]).run
    # the signal landed before the second forward pass, during which the CPU workers measure the first batch
    assert resumed["resumed_from_sequence"] == 1
    assert (out / "llama__builtin" / "layers.csv").read_bytes() == (Path(whole) / "layers.csv").read_bytes()
    assert not checkpoint.exists()


def test_hard_killed_sweep_resumes_from_the_periodic_checkpoint(tiny_models, tmp_path):
    """A SIGKILL (no handler runs) after a periodic checkpoint: the next sweep continues from it to the numbers of
    an uninterrupted run."""
    model = tiny_models["llama"]
    spec = write(tmp_path / "one.toml", f'models = ["{model}"]\n[settings]\n{SLOW_RUN}')
    whole = run_sweep(load_spec(spec), tmp_path / "whole", quiet=True, echo=lambda _: None)[0]["folder"]
    out, marker = tmp_path / "out", tmp_path / "saved"
    checkpoint = out / ".llama__builtin.resume.pt"
    # every batch saves; the run waits after its first save (tests.paced) until it is killed
    proc = subprocess.Popen(paced_argv(marker, "probe-save", ["sweep", spec, "--out", out, "--checkpoint-every",
                                                              "0.001", "-q"]),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_marker(proc, marker)
    finally:
        proc.kill()
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode(errors="replace")
    assert checkpoint.exists() and not (out / "llama__builtin").exists() and not (out / "summary.csv").exists()
    rows = run_sweep(load_spec(spec), out, quiet=True, echo=lambda _: None)
    assert [r["status"] for r in rows] == ["ok"], rows[0]["error"]
    assert ProbeResult.load(rows[0]["folder"]).run["resumed_from_sequence"] == 1
    assert (out / "llama__builtin" / "layers.csv").read_bytes() == (Path(whole) / "layers.csv").read_bytes()
    assert not checkpoint.exists()


@pytest.mark.parametrize("stale", ["other-settings", "unreadable"])
def test_sweep_starts_over_from_an_unusable_checkpoint(tiny_gpt2, docs_jsonl, tmp_path, stale):
    spec = write(tmp_path / "one.toml", f'models = ["{tiny_gpt2}"]\ncorpora = ["{docs_jsonl}"]\n[settings]\n{SMALL}')
    out = tmp_path / "out"
    checkpoint = checkpoint_path_for(out / "gpt2__docs.jsonl")
    if stale == "other-settings":  # e.g. the spec changed num_seqs since the run was stopped
        save_checkpoint(checkpoint, {"model": str(tiny_gpt2), "settings": {"num_seqs": 99}}, {"done": 1})
    else:
        out.mkdir()
        checkpoint.write_bytes(b"not a checkpoint")
    rows = run_sweep(load_spec(spec), out, quiet=True, echo=lambda _: None)
    assert [r["status"] for r in rows] == ["ok"], rows[0]["error"]
    assert ProbeResult.load(rows[0]["folder"]).run["resumed_from_sequence"] is None
    assert not checkpoint.exists()


@pytest.mark.parametrize("key", ["resume", "checkpoint"])
def test_spec_cannot_set_what_the_sweep_manages(tmp_path, key):
    with pytest.raises(CondenseError, match=f"unknown setting '{key}'"):
        parse_spec({"models": ["m"], "settings": {key: True}})
