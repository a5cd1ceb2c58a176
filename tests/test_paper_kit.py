"""The paper-reproduction kit: paper/ specs, the shipped table of the paper's values, `condense paper check`.

End to end: a sweep over tiny random-weight models run with `condense sweep`, then `condense paper
check` on the sweep folder and on single run folders against a small expected table written here;
the expected numbers are computed independently from each run's layers.csv with scipy.
"""

import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from condense.cli.app import main
from condense.reproduce import TABLE_COLUMNS, canonical_model, check_runs, failing, fairness_notes, paper_table
from condense.reproduce.table import read_table
from condense.results import HIST_EDGES, ProbeResult
from condense.sweep import load_spec
from tests.test_cli import run

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "paper").glob("*.toml"))
PAPER_SETTINGS = {"aggregate": "paper", "num_seqs": 100, "max_length": 512, "layers": "all", "sampler": "paper"}

# PAPER.md's "Values read off the paper's figures", transcribed by hand (family: hub ids, spearman, kendall)
PAPER_MD = [
    ("openai-community/gpt2{,-medium,-large,-xl}", "wikipedia", "0.38 / -0.06 / 0.11 / -0.59", "0.26 / -0.05 / 0.04 / -0.56"),
    ("Qwen/Qwen2.5-{0.5B,1.5B,3B,7B,14B,32B,72B}", "wikipedia", "0.95 / 0.99 / 0.87 / 0.66 / 0.35 / 0.11 / -0.24", None),
    ("bigscience/bloom-{560m,1b1,1b7,3b,7b1}", "wikipedia", "1.00 / 0.99 / 0.52 / 0.32 / -0.44", None),
    ("Qwen/Qwen3-{0.6B,1.7B,4B,8B,14B,32B}", "wikipedia", "0.91 / 0.76 / 0.79 / 0.57 / 0.38 / -0.47",
     "0.77 / 0.61 / 0.64 / 0.48 / 0.33 / -0.34"),
    ("openai-community/gpt2{,-medium,-large,-xl}", "pubmed", "0.50 / 0.02 / 0.67 / -0.57", None),
    ("openai-community/gpt2{,-medium,-large,-xl}", "imdb", "0.33 / 0.12 / -0.01 / -0.57", None),
    ("openai-community/gpt2{,-medium,-large,-xl}", "squad", "0.02 / -0.53 / -0.21 / -0.73", None),
    ("Qwen/Qwen2.5-Math-{1.5B,7B}", "wikipedia", "0.91 / 0.81", None),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-{1.5B,7B,14B,32B}", "wikipedia", "0.91 / 0.78 / 0.43 / 0.35", None),
]


def expand(pattern):
    head, body, tail = re.match(r"(.*)\{(.*)\}(.*)", pattern).groups()
    return [head + part + tail for part in body.split(",")]


def numbers(text):
    return [float(v) for v in text.split(" / ")]


# ---------------------------------------------------------------- the shipped table and the specs

def test_shipped_table_holds_every_value_of_paper_md():
    table = paper_table()
    assert list(table.columns) == list(TABLE_COLUMNS) and table["id"].is_unique
    assert (table["convention"] == "paper").all() and (table["num_texts"] == 100).all()
    assert (table["max_length"] == 512).all() and (table["read_tolerance"] == 0.03).all()
    for pattern, dataset, rhos, taus in PAPER_MD:
        models = expand(pattern)
        for k, (model, rho) in enumerate(zip(models, numbers(rhos), strict=True)):
            row = table[(table["model"] == model) & (table["dataset"] == dataset) & (table["finding"] != "4")] \
                if "Math" not in model and "Distill" not in model else table[table["model"] == model]
            assert len(row) == 1, (model, dataset)
            assert row["spearman"].iloc[0] == rho, (model, dataset)
            tau = numbers(taus)[k] if taus else math.nan
            assert row["kendall"].iloc[0] == tau or (math.isnan(tau) and math.isnan(row["kendall"].iloc[0]))
    # the distillation bases of 14B/32B are Qwen2.5-14B/32B, with the values of the distillation figure
    distill = table[table["finding"] == "4"].set_index("model")["spearman"]
    assert distill["Qwen/Qwen2.5-14B"] == 0.35 and distill["Qwen/Qwen2.5-32B"] == 0.12
    mlp = table[table["family"] == "GPT2 controlled MLP width"]
    assert list(mlp["spearman"]) == [0.97, 0.91, 0.69, 0.43] and list(mlp["kendall"]) == [0.92, 0.82, 0.54, 0.38]
    olmo = table[table["model"] == "allenai/Olmo-3-1025-7B"].set_index("revision")["spearman"]
    assert olmo["main"] == -0.46 and olmo[""] == 1.0
    assert len(table) == 48


def test_table_ships_once_as_package_data():
    copies = [p for p in REPO.rglob("paper_values.csv") if ".git" not in p.parts]
    assert copies == [REPO / "condense" / "reproduce" / "paper_values.csv"]
    assert '"reproduce/*.csv"' in (REPO / "pyproject.toml").read_text()


def test_specs_parse_and_cover_the_table_in_the_paper_convention():
    assert {p.name for p in SPECS} >= {"fig1_gpt2.toml", "fig1_qwen2.5.toml", "fig1_bloom.toml", "fig1_qwen3.toml",
                                       "datasets_gpt2.toml", "distillation.toml"}
    table = paper_table()
    sizes = dict(zip(table["model"].map(canonical_model), table["size"]))
    planned, settings_by_folder = set(), {}
    for spec in SPECS:
        for r in load_spec(spec):
            assert {k: r.settings.get(k) for k in PAPER_SETTINGS} == PAPER_SETTINGS, (spec.name, r.model)
            assert r.corpus in ("wikipedia", "pubmed", "imdb", "squad") and r.resources.get("num_gpus", 0) >= 1
            size = sizes[canonical_model(r.model)]
            billions = float(size[:-1]) / (1000 if size.endswith("M") else 1)
            if billions >= 14:  # the big ones are spread with accelerate, in bfloat16
                assert r.settings.get("device_map") == "auto" and r.settings["dtype"] == "bfloat16", r.model
            # a run shared by two specs (same folder under one --out) must have the same settings
            assert settings_by_folder.setdefault(r.folder, r.settings) == r.settings, r.folder
            planned.add((canonical_model(r.model), r.corpus))
    wanted = {(canonical_model(m), d) for m, d, auto in zip(table["model"], table["dataset"], table["auto_match"])
              if m and auto}
    assert planned == wanted


# ---------------------------------------------------------------- fairness notes and matching

def paper_meta(**changes):
    """run.json facts of a run made exactly as the paper measures."""
    settings = {"corpus": "wikipedia", "aggregate": "paper", "num_seqs": 100, "max_length": 512, "layers": "all",
                "exclude_first_token": False, "center": "none", "paper_ragged": False, "sampler": "paper"}
    settings.update(changes.pop("settings", {}))
    meta = {"model": "openai-community/gpt2", "hub_id": "openai-community/gpt2", "revision": None,
            "init": "pretrained", "resolved": "openai-community/gpt2", "settings": settings,
            "counts": {"sequences": settings["num_seqs"]}}
    meta.update(changes)
    return meta


def test_fairness_notes_name_every_difference_and_none_for_the_paper_setup():
    row = paper_table().set_index("id").loc["gpt2@wikipedia"].copy()
    row["id"] = "gpt2@wikipedia"
    assert fairness_notes(paper_meta(), row) == []
    cases = [
        (dict(settings={"aggregate": "pooled"}), "pooled aggregation (paper: paper"),
        (dict(counts={"sequences": 16}), "16 texts (paper: 100)"),
        (dict(settings={"max_length": 256}), "max_length 256 (paper: 512)"),
        (dict(init="random"), "random init (paper: trained weights)"),
        (dict(resolved="/cache/qwen/model.gguf"), "quantised weights (GGUF"),
        (dict(quantization="Q4_K_M"), "quantised weights (Q4_K_M"),
        (dict(settings={"corpus": "/data/docs.jsonl"}), "corpus docs.jsonl (paper: wikipedia)"),
        (dict(settings={"corpus": "builtin"}), "corpus builtin (paper: wikipedia)"),
        (dict(revision="stage1-step0"), "revision stage1-step0 (paper: main)"),
        (dict(settings={"layers": "0:12:2"}), "layers 0:12:2 (paper: all)"),
        (dict(settings={"exclude_first_token": True}), "first token excluded"),
        (dict(settings={"center": "sequence"}), "centred per sequence"),
        (dict(settings={"paper_ragged": True}), "ragged text lengths"),
        (dict(settings={"sampler": "sequential"}), "sequential texts (paper: random stretches"),
    ]
    for change, expected in cases:
        notes = fairness_notes(paper_meta(**change), row)
        assert len(notes) == 1 and notes[0].startswith(expected), (change, notes)


def fake_run(folder, trend, **meta_changes):
    """A run folder with a given trend (layers.csv of 4 layers; the check reads run.json's trend)."""
    layers = pd.DataFrame({"layer": [0, 1, 2, 3], "layer_fraction": [0, 1 / 3, 2 / 3, 1],
                           "mean_cos": [0.1, 0.2, 0.3, 0.4]})
    hist = np.full((4, len(HIST_EDGES) - 1), 1 / (HIST_EDGES[1] - HIST_EDGES[0]) / 128)
    meta = {"format": 1, **paper_meta(**meta_changes), "trend": trend}
    ProbeResult(layers, hist, trend, meta).save(folder, heatmap=False)
    return folder


def test_matching_by_hub_id_corpus_fallback_pairs_and_failed_sweep_runs(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "legacy", {"spearman": 0.30, "kendall": 0.10}, model="gpt2", hub_id="gpt2")  # bare legacy name
    fake_run(runs / "xl-builtin", {"spearman": -0.50, "kendall": -0.50}, model="gpt2-xl", hub_id="gpt2-xl",
             settings={"corpus": "builtin"})
    fake_run(runs / "q32", {"spearman": 0.115, "kendall": 0.1}, model="Qwen/Qwen2.5-32B", hub_id="Qwen/Qwen2.5-32B")
    fake_run(runs / "coder", {"spearman": 0.90, "kendall": 0.8}, model="/cache/coder-0.5b.gguf", hub_id=None,
             resolved="/cache/coder-0.5b.gguf", settings={"aggregate": "pooled", "corpus": "builtin"})
    (runs / "summary.csv").write_text("model,corpus,status,error,seconds,spearman,kendall,last_half_mean_cos,folder\n"
                                      "Qwen/Qwen3-32B,wikipedia,failed,CUDA out of memory,1.0,,,,/gone\n")
    report = check_runs([runs], pairs=[(runs / "coder", "Qwen/Qwen2.5-0.5B")]).set_index(["id", "run"], drop=False)
    # pairing a run with its own model's row is explicit, not a proxy
    own = check_runs([runs / "legacy"], pairs=[("legacy", "gpt2@imdb")])
    assert list(own[own["run"] != ""]["id"]) == ["gpt2@imdb"] and not own["proxy"].any()
    assert own.set_index("id").loc["gpt2@imdb", "notes"] == "corpus wikipedia (paper: imdb)"

    legacy = report.loc[("gpt2@wikipedia", str(runs / "legacy"))]
    assert legacy["status"] == "outside"  # rho 0.30 vs 0.38 is inside, but tau 0.10 vs 0.26 is not
    assert legacy["diff_spearman"] == pytest.approx(0.30 - 0.38) and legacy["diff_kendall"] == pytest.approx(0.10 - 0.26)
    xl = report.loc[("gpt2-xl@wikipedia", str(runs / "xl-builtin"))]  # builtin corpus: compared with WikiText
    assert xl["status"] == "inside" and "corpus builtin (paper: wikipedia)" in xl["notes"] and not xl["proxy"]
    assert xl["diff_spearman"] == pytest.approx(-0.50 + 0.59) and xl["diff_kendall"] == pytest.approx(-0.50 + 0.56)
    # Qwen2.5-32B has two readings (Figure 1: 0.11, distillation: 0.12): compared with both
    assert set(report[report["run"] == str(runs / "q32")]["id"]) == {"qwen2.5-32b@wikipedia", "distill-base-32b@wikipedia"}
    coder = report.loc[("qwen2.5-0.5b@wikipedia", str(runs / "coder"))]
    assert coder["proxy"] and coder["notes"].startswith("proxy: coder-0.5b.gguf stands in for Qwen/Qwen2.5-0.5B")
    assert "pooled aggregation" in coder["notes"] and "quantised weights" in coder["notes"]
    assert report.loc[("qwen3-32b@wikipedia", "")]["notes"] == "sweep run failed: CUDA out of memory"
    assert report.loc[("mlp-width-64@wikipedia", "")]["notes"] == "compared only with --pair RUN=mlp-width-64@wikipedia"
    assert (report["status"] == "missing").sum() == 48 - 5 and (report["status"] == "unmatched").sum() == 0
    assert coder["status"] == "inside" and coder["diff_spearman"] == pytest.approx(0.90 - 0.95)
    assert list(failing(report)["id"]) == ["gpt2@wikipedia"]
    assert len(failing(report, require_all=True)) == 1 + 43


def test_tolerance_edges_are_inside(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,model,dataset,spearman,kendall\nr,openai-community/gpt2,wikipedia,0.5,0.25\n")
    fake_run(tmp_path / "a", {"spearman": 0.6, "kendall": 0.15})
    report = check_runs([tmp_path / "a"], table, tolerance=0.1)
    assert list(report["status"]) == ["inside"]
    assert list(check_runs([tmp_path / "a"], table, tolerance=0.09)["status"]) == ["outside"]
    fake_run(tmp_path / "b", {"spearman": 0.5, "kendall": 0.5})  # Spearman equal, Kendall off by 0.25
    assert list(check_runs([tmp_path / "b"], table, tolerance=0.2)["status"]) == ["outside"]
    fake_run(tmp_path / "c", {"spearman": None, "kendall": None})  # no trend: never inside
    report = check_runs([tmp_path / "c"], table, tolerance=2.0)
    assert list(report["status"]) == ["outside"] and "no trend statistic" in report["notes"][0]


# ---------------------------------------------------------------- end to end: sweep, then check

def cli(monkeypatch, capsys, *args):
    """Run `condense ARGS` in this process through main()'s error boundary; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["condense", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err



def scipy_trend(folder):
    layers = pd.read_csv(Path(folder) / "layers.csv")
    rho = stats.spearmanr(layers["layer"], layers["mean_cos"]).statistic
    tau = stats.kendalltau(layers["layer"], layers["mean_cos"], variant="b").statistic
    return float(rho), float(tau)


def toward_zero(value, by):
    return float(value - (np.sign(value) or 1.0) * by)


def test_sweep_then_check_sweep_folder_and_run_folders(tiny_models, docs_jsonl, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "kit.toml"
    spec.write_text(f'models = ["{tiny_models["llama"]}", "{tiny_models["qwen3"]}"]\ncorpora = ["{docs_jsonl}"]\n'
                    "[settings]\nnum_seqs = 2\nmax_length = 16\nspectrum_seqs = 0\naggregate = \"paper\"\n"
                    f'[[runs]]\nmodel = "gpt2"\ncorpus = "{docs_jsonl}"\nsettings = {{ init = "random" }}\n')
    sweep = tmp_path / "sweep"
    p = run("sweep", spec, "--out", sweep, "-q")
    assert p.returncode == 0, p.stderr
    summary = pd.read_csv(sweep / "summary.csv", keep_default_na=False).set_index("model")
    llama, qwen3, gpt2 = (summary.loc[m, "folder"] for m in (str(tiny_models["llama"]), str(tiny_models["qwen3"]), "gpt2"))
    (g_rho, g_tau), (l_rho, _) = scipy_trend(gpt2), scipy_trend(llama)
    # gpt2 matched by hub id, 0.05 off (inside 0.1); llama paired by hand, 0.3 off (outside); one row without a run
    paper = {"gpt2": (toward_zero(g_rho, 0.05), toward_zero(g_tau, 0.04)), "llama": (toward_zero(l_rho, 0.3), None)}
    table = tmp_path / "expected.csv"
    table.write_text("id,model,dataset,spearman,kendall,auto_match\n"
                     f"gpt2-row,openai-community/gpt2,wikipedia,{paper['gpt2'][0]!r},{paper['gpt2'][1]!r},true\n"
                     f"llama-row,,wikipedia,{paper['llama'][0]!r},,false\n"
                     "absent-row,Qwen/Qwen3-32B,wikipedia,-0.47,-0.34,true\n")
    out = tmp_path / "report.csv"
    p = run("paper", "check", sweep, "--table", table, "--pair", f"{llama}=llama-row", "--out", out)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == "condense: 1 of 2 comparisons outside tolerance 0.1"
    assert "1 paper rows have no run (--require-all to fail on them):\n  (no family): absent-row\n" in p.stdout
    assert f"no paper row for run {qwen3}" in p.stdout and "*proxy" in p.stdout
    report = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("id")
    g, ll = report.loc["gpt2-row"], report.loc["llama-row"]
    assert g["status"] == "inside" and g["run"] == gpt2 and not g["proxy"]
    assert g["spearman"] == pytest.approx(g_rho, abs=1e-5) and g["kendall"] == pytest.approx(g_tau, abs=1e-5)
    assert g["diff_spearman"] == pytest.approx(g_rho - paper["gpt2"][0], abs=1e-5)
    assert g["diff_kendall"] == pytest.approx(g_tau - paper["gpt2"][1], abs=1e-5)
    for note in ("random init (paper: trained weights)", "2 texts (paper: 100)", "max_length 16 (paper: 512)",
                 "corpus docs.jsonl (paper: wikipedia)"):
        assert note in g["notes"]
    assert "aggregation" not in g["notes"]  # the sweep used the paper's convention
    assert ll["status"] == "outside" and ll["proxy"] and ll["notes"].startswith("proxy: llama stands in for llama-row")
    assert ll["spearman"] == pytest.approx(l_rho, abs=1e-5) and ll["diff_spearman"] == pytest.approx(l_rho - paper["llama"][0], abs=1e-5)
    assert report.loc["absent-row", "status"] == "missing"
    assert list(report[report["status"] == "unmatched"]["run"]) == [qwen3]

    # the same CLI in this process (no second interpreter start): a wider tolerance, --require-all
    pair = f"{llama}=llama-row"
    assert cli(monkeypatch, capsys, "paper", "check", sweep, "--table", table, "--pair", pair, "--tolerance", 0.5)[0] == 0
    code, _, stderr = cli(monkeypatch, capsys, "paper", "check", sweep, "--table", table, "--pair", pair,
                          "--tolerance", 0.5, "--require-all")
    assert code == 1 and stderr.strip() == "condense: 1 paper rows without a run"

    # single run folders; the pair may name a run by its folder name; a moved sweep folder still finds its runs
    code, stdout, _ = cli(monkeypatch, capsys, "paper", "check", gpt2, llama, "--table", table,
                          "--pair", f"{Path(llama).name}=llama-row")
    assert code == 1 and "2 compared: 1 inside, 1 outside" in stdout
    moved = tmp_path / "moved"
    os.rename(sweep, moved)
    code, stdout, stderr = cli(monkeypatch, capsys, "paper", "check", moved / Path(gpt2).name, "--table", table)
    assert code == 0 and "1 compared: 1 inside, 0 outside tolerance 0.1" in stdout, stderr
    again = check_runs([moved], table, pairs=[(moved / Path(llama).name, "llama-row")]).set_index("id")
    assert again.loc["gpt2-row", "spearman"] == pytest.approx(g_rho, abs=1e-5)
    assert again.loc["llama-row", "status"] == "outside"


# ---------------------------------------------------------------- bad input: one line, exit 2

@pytest.fixture
def one_run(tmp_path):
    return fake_run(tmp_path / "run", {"spearman": 0.4, "kendall": 0.3})


def bad_tables(tmp_path):
    tables = {
        "no_spearman": "id,model,dataset\nr,gpt2,wikipedia\n",
        "text_rho": "id,model,dataset,spearman\nr,gpt2,wikipedia,high\n",
        "range_rho": "id,model,dataset,spearman\nr,gpt2,wikipedia,1.5\n",
        "twice": "id,model,dataset,spearman\nr,gpt2,wikipedia,0.1\nr,gpt2,imdb,0.2\n",
        "no_rows": "id,model,dataset,spearman\n",
        "bad_flag": "id,model,dataset,spearman,auto_match\nr,gpt2,wikipedia,0.1,maybe\n",
        "bad_texts": "id,model,dataset,spearman,num_texts\nr,gpt2,wikipedia,0.1,-3\n",
    }
    paths = {}
    for name, text in tables.items():
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_text(text)
    return paths


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, one_run, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no run here")
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "summary.csv").write_text("model,corpus,status,error,folder\ngpt2,wikipedia,ok,,/nowhere/gpt2__wikipedia\n")
    tables = bad_tables(tmp_path)
    out = tmp_path / "report.csv"
    cases = [
        ([tmp_path / "nope"], "does not exist"),
        ([empty], "is not a condense run folder"),
        ([stale], "lists run folder '/nowhere/gpt2__wikipedia'"),
        ([one_run / "run.json"], "is a file"),
        ([one_run, "--tolerance", "-0.1"], "bad --tolerance -0.1"),
        ([one_run, "--tolerance", "nan"], "bad --tolerance nan"),
        ([one_run, "--table", tmp_path / "none.csv"], "is not a file"),
        ([one_run, "--table", tables["no_spearman"]], "lacks column(s) spearman"),
        ([one_run, "--table", tables["text_rho"]], "spearman 'high' is not a number"),
        ([one_run, "--table", tables["range_rho"]], "spearman '1.5' is outside [-1, 1]"),
        ([one_run, "--table", tables["twice"]], "lists id 'r' twice"),
        ([one_run, "--table", tables["no_rows"]], "has no rows"),
        ([one_run, "--table", tables["bad_flag"]], "bad auto_match 'maybe'"),
        ([one_run, "--table", tables["bad_texts"]], "bad num_texts '-3'"),
        ([one_run, "--pair", "no-equals-sign"], "bad --pair 'no-equals-sign'"),
        ([one_run, "--pair", f"{one_run}=no-such-row"], "--pair row 'no-such-row' is neither"),
        ([one_run, "--pair", f"{empty}=gpt2@wikipedia"], "is not a run folder nor the name"),
        ([], "no runs to check"),
    ]
    for args, expected in cases:
        code, _, stderr = cli(monkeypatch, capsys, "paper", "check", *args, "--out", out)
        assert code == 2, (args, stderr)
        assert stderr.startswith("condense: error: ") and expected in stderr and stderr.count("\n") == 1, (args, stderr)
        assert not out.exists() and not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
    code, _, stderr = cli(monkeypatch, capsys, "paper", "table", "--family", "Llama")
    assert code == 2 and "no family 'Llama'" in stderr and stderr.count("\n") == 1


def test_read_table_fills_defaults_for_a_minimal_table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,model,dataset,spearman\nr,gpt2,wikipedia,-0.2\n")
    table = read_table(path)
    assert list(table.columns) == list(TABLE_COLUMNS)
    row = table.iloc[0]
    assert row["spearman"] == -0.2 and math.isnan(row["kendall"]) and row["auto_match"]
    assert (row["convention"], row["num_texts"], row["max_length"], row["init"]) == ("paper", 100, 512, "pretrained")


def test_paper_table_command_prints_and_writes_the_table(tmp_path, monkeypatch, capsys):
    out = tmp_path / "qwen3.csv"
    code, stdout, _ = cli(monkeypatch, capsys, "paper", "table", "--family", "qwen3", "--out", out)
    assert code == 0
    assert "Qwen/Qwen3-32B" in stdout and "-0.47" in stdout and "gpt2" not in stdout
    written = read_table(out)
    assert list(written["model"]) == [f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B")]


def test_a_failed_sweep_run_is_reported_only_against_its_own_corpus(tmp_path):
    """A run that failed on IMDB says so beside the IMDB row only; the same model's WikiText row is just missing."""
    table = tmp_path / "t.csv"
    table.write_text("id,model,dataset,spearman,kendall\n"
                     "g-wiki,openai-community/gpt2,wikipedia,0.5,0.25\ng-imdb,openai-community/gpt2,imdb,0.5,0.25\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "summary.csv").write_text("model,corpus,status,error,seconds,spearman,kendall,last_half_mean_cos,folder\n"
                                      "openai-community/gpt2,imdb,failed,CUDA out of memory,1.0,,,,/gone\n")
    report = check_runs([runs], table).set_index("id")
    assert list(report["status"]) == ["missing", "missing"]
    assert report.loc["g-imdb", "notes"] == "sweep run failed: CUDA out of memory"
    assert report.loc["g-wiki", "notes"] == ""
