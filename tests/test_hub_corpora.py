"""The corpus presets end to end through ``datasets``, streaming and whole, from the test hub.

The hub (tests/hub_server.py) serves parquet fixtures under the real datasets' ids, configs and
column types (tests/hub_fixtures.py); one fresh process with ``HF_ENDPOINT`` and an empty
``HF_HOME`` reads every preset (tests/hub_reads.py), runs the authors' sampler on WikiText loaded
with ``datasets``, and probes with ``--sampler paper``.
"""

import json
import subprocess
import sys

import pytest

from condense.probing.corpus import HUB_PRESETS, TokenSequence, token_hash
from tests.hub_fixtures import ROOT, hub_env, manifest

pytest.importorskip("datasets")
pytest.importorskip("nltk")
N = 40  # repetitions 0..N-1 (the paper has 100: the paper kit test runs those)


@pytest.fixture(scope="module")
def read(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("hub-corpora")
    out = work / "read.json"
    proc = subprocess.run([sys.executable, "-m", "tests.hub_reads", str(out), str(N), str(work / "probe")],
                          env=hub_env(hub.endpoint, work / "hf-home"), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(out.read_text()), "work": work, "stderr": proc.stderr}


def test_offline_the_presets_come_from_the_datasets_cache(read, hub):
    out = read["work"] / "offline.json"
    env = hub_env(hub.endpoint, read["work"] / "hf-home", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    start = len(hub.requests)
    proc = subprocess.run([sys.executable, "-m", "tests.hub_reads", str(out), "--offline"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = json.loads(out.read_text())
    assert hub.requests[start:] == []
    for preset in HUB_PRESETS:
        assert offline[preset] == read[preset]["documents"], preset


def column(hub, preset):
    return hub.facts.tables[preset].column(HUB_PRESETS[preset][3]).to_pylist()


@pytest.mark.parametrize("preset", list(HUB_PRESETS))
def test_streaming_yields_every_nonempty_row_once_in_order(read, hub, preset):
    rows = column(hub, preset)
    docs = read[preset]["documents"]
    expected = [(f"{preset}[{i}]", i, text.strip()) for i, text in enumerate(rows) if text.strip()]
    assert [tuple(d) for d in docs] == expected  # the first row once, not twice


@pytest.mark.parametrize("preset", list(HUB_PRESETS))
def test_the_whole_split_gives_every_row_as_it_is(read, hub, preset):
    assert read[preset]["rows"] == column(hub, preset) and read[preset]["label"] == preset


def test_fixtures_look_like_the_real_corpora(hub):
    wiki = column(hub, "wikipedia")
    assert "" in wiki and any(t.startswith(" = ") and t.endswith(" = \n") for t in wiki)
    pubmed = hub.facts.tables["pubmed"]
    assert pubmed.schema.field("context").type.names == ["contexts", "labels", "meshes"]
    squad = column(hub, "squad")
    assert len(set(squad)) == len(squad) // 4  # each context once per question


def test_pubmed_reads_the_long_answer_the_authors_read(read, hub):
    table = hub.facts.tables["pubmed"]
    texts = [d[2] for d in read["pubmed"]["documents"]]
    assert texts == [t.strip() for t in table.column("long_answer").to_pylist()]
    contexts = [" ".join(c["contexts"]) for c in table.column("context").to_pylist()]
    assert all(text != context for text, context in zip(texts, contexts))


def test_sampler_paper_probes_the_authors_token_ids(read, hub):
    assert read["probe"]["rc"] == 0, read["probe"]["stderr"]
    assert read["probe"]["stderr"] == ""  # nothing printed by the libraries (progress bars, warnings)
    tokenizer = hub.facts.tokenizer
    theirs = [TokenSequence(tokenizer(t, truncation=True, max_length=512)["input_ids"], [], ()) for t in read["authors"]]
    assert len(theirs) == N and all(len(s.input_ids) == 512 for s in theirs)
    run = manifest(read["work"] / "probe")
    assert run["settings"]["sampler"] == "paper" and run["counts"]["sequences"] == N
    assert run["token_hash"] == token_hash(theirs)  # the same ids, token for token, for every repetition
    wiki = column(hub, "wikipedia")
    starts = run["sequence_starts"]
    assert len(starts) == N and all(0 <= s < int(len(wiki) * 0.95) for s in starts) and len(set(starts)) > N // 2
    assert all(read["authors"][r].startswith(wiki[s]) for r, s in enumerate(starts))
