"""The paper kit end to end through the hub: the real specs in paper/, then ``condense paper check``.

``condense sweep paper/fig1_gpt2.toml`` and ``paper/datasets_gpt2.toml`` (16 runs: the four GPT-2
ids on WikiText-103, PubMedQA, IMDB and SQuAD, 100 texts of 512 tokens, the paper's sampler and
aggregation) with the four ids served as tiny random GPT-2 models and the corpora as small fixtures
(tests/hub_fixtures.py), into an empty cache, then the check on the sweep folder. The numbers are
those of random weights; what is tested is that the chain works and is matched row for row.
"""

import re

import pandas as pd
import pytest

from tests.cli_driver import run_one
from tests.hub_fixtures import GPT2_IDS, ROOT, hub_env, manifest, run_condense

pytest.importorskip("datasets")
CORPORA = ("wikipedia", "pubmed", "imdb", "squad")


@pytest.fixture(scope="module")
def kit(hub, tmp_path_factory):
    """Both sweeps into one folder, as paper/README.md runs them, in one process with an empty
    cache; then ``condense paper check`` on that folder (no hub needed: run here)."""
    work = tmp_path_factory.mktemp("hub-paper-kit")
    sweeps = work / "paper"
    results = run_condense([["sweep", ROOT / "paper" / f"{spec}.toml", "--out", sweeps, "-q"]
                            for spec in ("fig1_gpt2", "datasets_gpt2")], hub_env(hub.endpoint, work / "hf-home"),
                           work, timeout=600)
    results.append(run_one(["paper", "check", str(sweeps), "--out", str(work / "check.csv")]))
    return {"work": work, "sweeps": sweeps, "results": results}


def test_both_sweeps_run_every_model_on_every_corpus(kit, hub):
    for result, runs in zip(kit["results"][:2], (4, 12)):
        assert result["rc"] == 0, result["stdout"][-2000:] + result["stderr"][-2000:]
        assert len(re.findall(r"^\[\d+/\d+\] ok ", result["stdout"], re.M)) == runs, result["stdout"]
    runs = [manifest(f) for f in kit["sweeps"].iterdir() if (f / "run.json").exists()]
    assert sorted((r["model"], r["settings"]["corpus"]) for r in runs) == sorted((m, c) for m in GPT2_IDS for c in CORPORA)
    for run in runs:
        assert run["settings"]["sampler"] == "paper" and run["settings"]["aggregate"] == "paper"
        assert run["counts"] == {"sequences": 100, "tokens": 51200, "max_seq_len": 512}
        assert run["commit"] == hub.facts.commits[f"{run['hub_id']}@main"]


def test_paper_check_matches_every_gpt2_row_to_its_run(kit):
    check = kit["results"][2]
    assert check["rc"] in (0, 1), check["stderr"]  # 1: random weights are outside the paper's values
    report = pd.read_csv(kit["work"] / "check.csv", keep_default_na=False)
    gpt2 = report[report["family"] == "GPT2"]
    assert len(gpt2) == 16 and set(gpt2["status"]) <= {"inside", "outside"}
    assert sorted(zip(gpt2["paper_model"], gpt2["dataset"])) == sorted((m, c) for m in GPT2_IDS for c in CORPORA)
    for row in gpt2.itertuples():
        run = manifest(row.run)
        assert (run["hub_id"], run["settings"]["corpus"]) == (row.paper_model, row.dataset)
        assert row.notes == ""  # run as the paper ran: texts, sampler, aggregation, layers, revision
    assert "16 compared" in check["stdout"] and "no paper row for run" not in check["stdout"]
