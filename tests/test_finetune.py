"""condense finetune: end to end on tiny random models, determinism, the dispersion term, bad input."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from condense.errors import CondenseError
from condense.plotting.steps import shown_steps
from condense.probing.corpus import build_sequences
from condense.training import finetune, heldout_lm_loss, load_finetune
from tests.test_cli import run

TINY = {"steps": 4, "seq_len": 32, "batch_size": 2, "probe_every": 2, "probe_seqs": 2, "quiet": True}


def test_cli_end_to_end_then_checkpoint_probes(tiny_gpt2, docs_jsonl, tmp_path):
    out = tmp_path / "ft"
    p = run("finetune", tiny_gpt2, "--corpus", docs_jsonl, "--dispersion", "angular_spread", "--coeff", 0.5,
            "--steps", 4, "--seq-len", 32, "--batch-size", 2, "--probe-every", 2, "--probe-seqs", 2,
            "--out", out, "-q")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == [
        "checkpoint", "finetune.json", "loss_log.csv", "probes", "probes.csv", "steps.png"]
    log = pd.read_csv(out / "loss_log.csv")
    assert list(log.columns) == ["step", "lm_loss", "dispersion_loss", "total_loss", "lr"]
    assert log["step"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(log["total_loss"], log["lm_loss"] + 0.5 * log["dispersion_loss"], rtol=1e-6)
    probes = pd.read_csv(out / "probes.csv")
    assert probes["step"].tolist() == [0, 2, 4]
    assert sorted(f.name for f in (out / "probes").iterdir()) == ["step_000000", "step_000002", "step_000004"]
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["settings"]["dispersion"] == "angular_spread" and manifest["dispersion_blocks"] == "all"
    assert manifest["report_to"] == [] and manifest["resumed_from_step"] is None  # no tensorboard/ above
    # 13 documents: the last ceil(1.3) = 2 are held out, and the probes read exactly those.
    assert manifest["data"]["train_documents"] == 11 and manifest["data"]["heldout_documents"] == 2
    final = json.loads((out / "probes" / "step_000004" / "run.json").read_text())
    assert final["first_documents"] == ["docs.jsonl:12", "docs.jsonl:13"]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]

    # The checkpoint holds the trained weights: probing it on the held-out text reproduces the last probe.
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("\n".join(docs_jsonl.read_text().splitlines()[-2:]) + "\n")
    q = run("probe", out / "checkpoint", "--corpus", heldout, "--num-seqs", 2, "--max-length", 32,
            "--batch-size", 2, "--out", tmp_path / "probe", "-q")
    assert q.returncode == 0, q.stderr
    again = pd.read_csv(tmp_path / "probe" / "layers.csv")
    logged = pd.read_csv(out / "probes" / "step_000004" / "layers.csv")
    assert len(again) == 4  # 3 blocks + the embedding output
    np.testing.assert_allclose(again["mean_cos"], logged["mean_cos"], atol=1e-5)


@pytest.fixture(scope="module")
def runs(tiny_gpt2, tmp_path_factory):
    """Runs on a 13-document corpus: without dispersion, and twice with it (same seed)."""
    root = tmp_path_factory.mktemp("finetune")
    corpus = _corpus(root)
    common = {"corpus": str(corpus), **TINY}
    return {
        "none": finetune(str(tiny_gpt2), root / "none", dispersion="none", **common),
        "on": finetune(str(tiny_gpt2), root / "on", dispersion="angular_spread", coeff=1.0, **common),
        "on_again": finetune(str(tiny_gpt2), root / "on_again", dispersion="angular_spread", coeff=1.0, **common),
        "root": root,
        "corpus": corpus,
    }


def _corpus(root):
    from pydoc_data.topics import topics

    texts = [t.strip() for t in topics.values() if t.strip()][:12]
    path = root / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t[: 300 + 150 * i]}) for i, t in enumerate(texts)) + "\n")
    return path


def test_same_seed_identical_outputs(runs):
    a, b = runs["on"], runs["on_again"]
    pd.testing.assert_frame_equal(a.loss_log, b.loss_log, check_exact=True)
    pd.testing.assert_frame_equal(a.probes, b.probes, check_exact=True)
    written = pd.read_csv(runs["root"] / "on" / "loss_log.csv")
    np.testing.assert_allclose(written["lm_loss"], a.loss_log["lm_loss"], rtol=1e-7)


def test_dispersion_on_vs_off(runs):
    off, on = runs["none"].loss_log, runs["on"].loss_log
    # Same weights and batch at step 1; the dispersion gradient changes every later step.
    assert off["lm_loss"].iloc[0] == on["lm_loss"].iloc[0]
    assert (off["lm_loss"].iloc[1:] != on["lm_loss"].iloc[1:]).all()
    assert off["dispersion_loss"].isna().all() and (off["total_loss"] == off["lm_loss"]).all()
    assert np.isfinite(on["dispersion_loss"]).all() and (on["dispersion_loss"] < 0).all()
    raw = (runs["root"] / "none" / "loss_log.csv").read_text().splitlines()
    assert raw[1].split(",")[2] == ""  # written as an empty cell
    assert runs["none"].manifest["dispersion_blocks"] is None


def test_load_finetune_and_baseline_figure(runs, tiny_gpt2):
    back = load_finetune(runs["root"] / "none")
    pd.testing.assert_frame_equal(back.probes, runs["none"].probes, check_exact=False, rtol=1e-7)
    assert sorted(back.results) == [0, 2, 4] and back.label.endswith("no dispersion")
    out = runs["root"] / "with_baseline"
    finetune(str(tiny_gpt2), out, baseline=runs["root"] / "none", corpus=str(runs["corpus"]),
             dispersion="decorrelation", where="0,-1", **{**TINY, "steps": 2})
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "steps.png").exists()
    assert json.loads((out / "finetune.json").read_text())["dispersion_blocks"] == [0, 2]


def test_dispersion_alone_lowers_last_layer_cosine(tiny_models, docs_jsonl, tmp_path):
    # At a high learning rate the LM loss alone collapses the last layer into a cone within a few
    # steps; a heavy dispersion term on that layer keeps its tokens apart.
    common = {"corpus": str(docs_jsonl), "steps": 4, "seq_len": 32, "batch_size": 4, "probe_every": 4,
              "probe_seqs": 4, "lr": 1e-2, "where": "last", "quiet": True}
    cos = {d: finetune(str(tiny_models["llama"]), tmp_path / d, dispersion=d, coeff=10.0, **common)
           .probes.set_index("step")["mean_cos_last"] for d in ("none", "angular_spread")}
    assert cos["none"][0] == cos["angular_spread"][0]
    assert cos["angular_spread"][4] < cos["none"][4] - 0.1


def test_heldout_loss_matches_hf_and_ignores_padding(tiny_gpt2, tokenizer, docs_jsonl):
    from transformers import AutoModelForCausalLM

    from condense.probing.corpus import read_documents

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    seqs = build_sequences(read_documents(str(docs_jsonl)), tokenizer, 24, 100)
    seqs = [seqs[0], seqs[-1]]  # 24 tokens and a short one: batching them pads the short one
    assert len(seqs[1].input_ids) < len(seqs[0].input_ids)
    batched = heldout_lm_loss(model, seqs, tokenizer, batch_size=2)
    one_by_one = [heldout_lm_loss(model, [s], tokenizer, batch_size=1) for s in seqs]
    n = [len(s.input_ids) - 1 for s in seqs]
    assert batched == pytest.approx((one_by_one[0] * n[0] + one_by_one[1] * n[1]) / sum(n), rel=1e-6)
    with torch.no_grad():
        ids = torch.tensor([seqs[0].input_ids])
        assert one_by_one[0] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)


def test_shown_steps_keeps_first_and_last():
    assert shown_steps(list(range(0, 101, 10)), 6) == [0, 20, 40, 60, 80, 100]
    assert shown_steps([0, 5], 6) == [0, 5]


BAD = [
    (["MODEL", "--steps", 0], "bad --steps 0"),
    (["MODEL", "--seq-len", 1], "bad --seq-len 1"),
    (["MODEL", "--seq-len", 512], "--seq-len 512 exceeds"),
    (["MODEL", "--coeff", -1], "bad --coeff -1"),
    (["MODEL", "--lr", 0], "bad --lr 0"),
    (["MODEL", "--heldout", 1.5], "bad --heldout 1.5"),
    (["MODEL", "--where", "a,b"], "bad --where 'a,b'"),
    (["MODEL", "--where", "0,7"], "block 7 is out of range"),
    (["MODEL", "--where", "2,-1"], "a block is named twice"),
    (["MODEL", "--dispersion", "spread"], "'spread' is not one of"),
    (["MODEL", "--corpus", "ONE_DOC"], "needs at least 2"),
    (["MODEL", "--corpus", "no/such.txt"], "unknown corpus"),
    (["MODEL", "--baseline", "NOT_FT"], "is not a finetune folder"),
    (["MODEL", "--out", "AFILE"], "is an existing file"),
    (["MODEL", "--out", "NOT_FT"], "is a non-empty folder that is not a"),
    (["no-such-model-xyz"], "no-such-model-xyz"),
    (["MODEL", "--report-to", "tensorbord"], "bad --report-to 'tensorbord': use none or"),
    (["MODEL", "--checkpoint-every", -1], "bad --checkpoint-every -1.0"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(map(str, a[1:3])) or a[0] for a, _ in BAD])
def test_bad_input_one_line_exit_2_before_loading(args, message, tiny_gpt2, docs_jsonl, tmp_path, monkeypatch,
                                                   capsys):
    def no_weights(*_a, **_k):
        raise AssertionError("weights were loaded before the inputs were validated")

    monkeypatch.setattr(sys.modules["condense.training.finetune"], "load_causal_lm", no_weights)
    (tmp_path / "one.txt").write_text("a single document with no blank line")
    (tmp_path / "not_ft").mkdir()
    (tmp_path / "not_ft" / "x.txt").write_text("x")
    (tmp_path / "afile").write_text("x")
    subs = {"MODEL": tiny_gpt2, "ONE_DOC": tmp_path / "one.txt", "NOT_FT": tmp_path / "not_ft",
            "AFILE": tmp_path / "afile"}
    argv = [str(subs.get(a, a)) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if "--corpus" not in argv:
        argv += ["--corpus", str(docs_jsonl)]
    monkeypatch.setattr(sys, "argv", ["condense", "finetune", *argv, "-q"])
    from condense.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out")]


def test_bad_input_subprocess(tiny_gpt2, tmp_path):
    p = run("finetune", tiny_gpt2, "--where", "9", "--out", tmp_path / "out", "-q")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "condense: error: bad --where '9': block 9 is out of range; this model has 3 blocks (0..2, or -3..-1)"]


def test_python_api_rejects_unknown_setting(tiny_gpt2, tmp_path):
    with pytest.raises(CondenseError, match="unknown finetune setting"):
        finetune(str(tiny_gpt2), tmp_path / "x", epochs=3)
