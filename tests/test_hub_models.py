"""Hub models end to end: real downloads through huggingface_hub and transformers into an empty cache.

The hub is tests/hub_server.py on 127.0.0.1 (plain http, a free port: a mirror as
``HF_ENDPOINT``), serving tiny random GPT-2 checkpoints. condense runs in fresh processes
(tests/cli_driver.py runs several command lines in one, each through the real CLI entry point),
because the hub clients read ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` at import.
"""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from condense import hub as condense_hub
from condense.models import loading
from tests.hub_fixtures import GPT2_IDS, by_command, hub_env, manifest, run_condense
from tests.hub_server import free_port

GPT2 = GPT2_IDS[0]
QUICK = ["--num-seqs", 4, "--max-length", 64, "-q"]


def error_line(result: dict) -> str:
    """The command's only stderr line, which must be condense's error (exit code 2)."""
    lines = result["stderr"].strip().splitlines()
    assert result["rc"] == 2 and len(lines) == 1 and lines[0].startswith("condense: error: "), result
    return lines[0]


def mean_cos(folder: Path) -> list[float]:
    return pd.read_csv(Path(folder) / "layers.csv")["mean_cos"].round(6).tolist()


@pytest.fixture(scope="module")
def online(hub, tmp_path_factory):
    """One process, an empty cache: probes by branch, tag, branch with a slash and commit sha; the
    failures; compare, family, rerun and finetune with a hub id and a revision; main again."""
    work = tmp_path_factory.mktemp("hub-online")
    home = work / "hf-home"
    sha_main = hub.facts.commits[f"{GPT2}@main"]
    commands = {
        "main": ["probe", GPT2, "--out", work / "main", *QUICK],
        "tag": ["probe", GPT2, "--revision", "v1.0", "--out", work / "tag", *QUICK],
        "branch": ["probe", GPT2, "--revision", "release/v1", "--out", work / "branch", *QUICK],
        "sha": ["probe", GPT2, "--revision", sha_main, "--out", work / "sha", *QUICK],
        "no repo": ["probe", "nobody/nothing", "--out", work / "x1", *QUICK],
        "no revision": ["probe", GPT2, "--revision", "no-such-branch", "--out", work / "x2", *QUICK],
        "no sha": ["probe", GPT2, "--revision", "0" * 40, "--out", work / "x3", *QUICK],
        "gated": ["probe", "acme/gated", "--out", work / "x4", *QUICK],
        "500": ["probe", "flaky/five-hundred", "--out", work / "x5", *QUICK],
        "dropped": ["probe", "flaky/dropped", "--out", work / "x6", *QUICK],
        "compare": ["compare", work / "main", GPT2, "--revision", "v1.0", "--runs-dir", work / "runs",
                    "--out", work / "compare.png", *QUICK],
        "family": ["family", GPT2, "--revision", "v1.0", "--runs-dir", work / "runs", "--out", work / "family.png",
                   *QUICK],
        "rerun": ["rerun", work / "tag", "--out", work / "rerun", "-q"],
        "finetune": ["finetune", GPT2, "--revision", "v1.0", "--steps", 2, "--batch-size", 2, "--seq-len", 32,
                     "--probe-seqs", 2, "--out", work / "ft", "-q"],
        "again": ["probe", GPT2, "--out", work / "again", *QUICK],
    }
    start = len(hub.requests)
    results = run_condense(list(commands.values()), hub_env(hub.endpoint, home), work)
    requests = by_command(hub.requests[start:], len(commands))
    return {"work": work, "home": home, **{name: {**r, "requests": q}
                                            for name, r, q in zip(commands, results, requests)}}


@pytest.fixture(scope="module")
def tiny_hub_runs(hub, tmp_path_factory):
    """mean_cos by layer of the checkpoints published at main and v1.0, probed from their folders."""
    from condense import probe

    out = tmp_path_factory.mktemp("hub-local")
    return {name: mean_cos(probe(str(hub.facts.folders[f"{GPT2}@{ref}"]), num_seqs=4, max_length=64, quiet=True)
                           .save(out / name)) for name, ref in (("main", "main"), ("v1", "v1.0"))}


def test_hub_reachable_asks_the_port_the_endpoint_names(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    loading.hub_reachable.cache_clear()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # http on a free port, not 443
        assert condense_hub.reachable() and loading.hub_reachable()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        assert not condense_hub.reachable()
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not condense_hub.reachable()
    finally:
        loading.hub_reachable.cache_clear()


def test_each_revision_probes_its_own_weights_and_run_json_records_the_commit(online, hub, tiny_hub_runs):
    commits = hub.facts.commits
    for name, revision, commit in (("main", None, commits[f"{GPT2}@main"]), ("tag", "v1.0", commits[f"{GPT2}@v1.0"]),
                                   ("branch", "release/v1", commits[f"{GPT2}@v1.0"]),
                                   ("sha", commits[f"{GPT2}@main"], commits[f"{GPT2}@main"])):
        assert online[name]["rc"] == 0, online[name]["stderr"]
        run = manifest(online["work"] / name)
        assert (run["hub_id"], run["revision"], run["commit"]) == (GPT2, revision, commit), name
        assert run["load_options"]["revision"] == revision
    # the numbers are those of the checkpoint published at that revision, probed from its folder
    assert mean_cos(online["work"] / "main") == mean_cos(online["work"] / "sha") == tiny_hub_runs["main"]
    assert mean_cos(online["work"] / "tag") == mean_cos(online["work"] / "branch") == tiny_hub_runs["v1"]
    assert tiny_hub_runs["main"] != tiny_hub_runs["v1"]
    # a ref with a slash went out percent-encoded, and the weights were downloaded once per commit
    assert any("/revision/release%2Fv1" in p for _, p, _ in online["branch"]["requests"])
    weights = [p for m, p, _ in online["tag"]["requests"] + online["branch"]["requests"]
               if m == "GET" and p.endswith("model.safetensors")]
    assert weights == [f"/{GPT2}/resolve/{commits[GPT2 + '@v1.0']}/model.safetensors"]


def test_a_second_run_downloads_nothing_and_offline_works_from_the_cache(online, hub):
    work, home = online["work"], online["home"]
    assert online["again"]["rc"] == 0, online["again"]["stderr"]
    asked = online["again"]["requests"]  # the revision is asked again (main may have moved), no file is
    assert asked and not [p for m, p, _ in asked if m == "GET" and "/resolve/" in p], asked
    assert mean_cos(work / "again") == mean_cos(work / "main")
    start = len(hub.requests)
    offline = run_condense([["probe", GPT2, "--out", work / "offline", *QUICK],
                            ["probe", GPT2, "--revision", "v1.0", "--out", work / "offline-tag", *QUICK]],
                           hub_env(hub.endpoint, home, HF_HUB_OFFLINE="1"), work / "p3")
    assert [r["rc"] for r in offline] == [0, 0], [r["stderr"] for r in offline]
    assert hub.requests[start:] == []  # not one request
    assert mean_cos(work / "offline") == mean_cos(work / "main")
    assert mean_cos(work / "offline-tag") == mean_cos(work / "tag")
    assert manifest(work / "offline-tag")["commit"] == hub.facts.commits[f"{GPT2}@v1.0"]


@pytest.mark.parametrize("case, pattern", [
    ("no repo", r"model 'nobody/nothing': no such repository on http://127\.0\.0\.1:\d+; check the id"),
    ("no revision", r"revision 'no-such-branch': no such revision on http://127\.0\.0\.1:\d+; give a branch, a tag"),
    ("no sha", r"revision '0{40}': no such revision"),
    ("gated", r"model 'acme/gated' is gated on http://127\.0\.0\.1:\d+: request access on its page, then log in"),
    ("500", r"answered HTTP 500 to HEAD /flaky/five-hundred/resolve/[0-9a-f]{40}/model\.safetensors: it is down"),
    ("dropped", (r"connection to the hub at http://127\.0\.0\.1:\d+ broke while downloading model 'flaky/dropped'.*"
                 r"run the command again to resume")),
])
def test_hub_failures_are_one_line_exit_2_without_retries(online, case, pattern):
    result = online[case]
    assert re.search(pattern, error_line(result)), result["stderr"]
    # asked of time.sleep, so no load can change it: at most the 1 s before the dropped download's retry,
    # which the hook refuses to send; huggingface_hub's back-off alone would sleep 23 s
    assert result["slept"] <= 1, result["slept"]
    assert not list(online["work"].glob("x*/run.json"))
    weights = [(m, r) for m, p, r in result["requests"] if p.endswith("model.safetensors")]
    if case == "500":  # asked once: no back-off
        assert weights == [("HEAD", None)], weights
    if case == "dropped":  # one try: its retry would have started from the same byte, and was not sent
        assert weights == [("HEAD", None), ("GET", None)], weights


def test_a_hub_that_is_down_falls_back_to_the_cache_else_one_line(online, tmp_path):
    down = hub_env(f"http://127.0.0.1:{free_port()}", online["home"])
    results = run_condense([["probe", GPT2, "--out", tmp_path / "cached", *QUICK],
                            ["probe", GPT2_IDS[1], "--out", tmp_path / "absent", *QUICK],
                            ["probe", GPT2, "--corpus", "pubmed", "--out", tmp_path / "corpus", *QUICK]], down, tmp_path)
    assert results[0]["rc"] == 0, results[0]["stderr"]
    assert mean_cos(tmp_path / "cached") == mean_cos(online["work"] / "main")
    line = error_line(results[1])
    assert re.search(r"cannot find model 'openai-community/gpt2-medium' locally or on the Hugging Face hub: it is "
                     r"not in the cache \(.*hf-home/hub\) and the hub at http://127\.0\.0\.1:\d+ does not answer "
                     r"\(check HF_ENDPOINT", line), line
    assert results[1]["slept"] < 1 and not (tmp_path / "absent").exists()
    line = error_line(results[2])  # datasets alone would retry for a minute
    assert re.search(r"cannot read corpus preset 'pubmed': the hub at http://127\.0\.0\.1:\d+ does not answer", line)
    assert results[2]["slept"] < 1


def test_compare_family_rerun_and_finetune_take_a_hub_id_and_revision(online, hub):
    work, v1 = online["work"], hub.facts.commits[f"{GPT2}@v1.0"]
    for name in ("compare", "family", "rerun", "finetune"):
        assert online[name]["rc"] == 0, (name, online[name]["stderr"])
    assert (work / "compare.png").stat().st_size > 10_000 and (work / "family.png").stat().st_size > 10_000
    probed = [manifest(f) for f in (work / "runs").iterdir() if (f / "run.json").exists()]
    assert [(r["revision"], r["commit"]) for r in probed] == [("v1.0", v1)]  # family reused compare's run
    assert not [p for _, p, _ in online["family"]["requests"] if "/resolve/" in p]
    rerun = manifest(work / "rerun")
    assert rerun["commit"] == v1 and mean_cos(work / "rerun") == mean_cos(work / "tag")
    finetune = json.loads((work / "ft" / "finetune.json").read_text())
    assert (finetune["settings"]["revision"], finetune["info"]["revision"], finetune["info"]["commit"]) == \
        ("v1.0", "v1.0", v1)
