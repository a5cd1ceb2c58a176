"""condense.api.same_run / existing_run: the one rule for reusing a run folder (compare, family, sweep)."""

import json

import pytest

import condense
from condense.api import existing_run, resolve_runs, same_run

SMALL = dict(num_seqs=2, max_length=16, spectrum_seqs=0)


@pytest.fixture(scope="module")
def manifests(tiny_gpt2, tmp_path_factory):
    """Real run.json manifests: pretrained weights (seed left at its default) and random init, seed 3."""
    root = tmp_path_factory.mktemp("runs")
    pretrained = condense.probe(str(tiny_gpt2), quiet=True, dtype="float32", **SMALL).save(root / "p", heatmap=False)
    random = condense.probe(str(tiny_gpt2), quiet=True, init="random", init_seed=3, **SMALL).save(root / "r",
                                                                                                  heatmap=False)
    return {"pretrained": pretrained, "random": random}


def manifest(folder):
    return json.loads((folder / "run.json").read_text())


def test_same_options_match_and_omitted_ones_equal_their_defaults(manifests, tiny_gpt2):
    run = manifest(manifests["pretrained"])
    assert same_run(run, str(tiny_gpt2), **SMALL)
    assert same_run(run, str(tiny_gpt2), layers="all", corpus="builtin", aggregate="pooled", **SMALL)


@pytest.mark.parametrize("change", [{"num_seqs": 3}, {"layers": "last"}, {"aggregate": "paper"}, {"center": "sequence"},
                                    {"corpus": "other.txt"}, {"revision": "v2"}, {"init": "random"}, {"sampler": "paper"},
                                    {"dtype": "bfloat16"}, {"exclude_first_token": True}])
def test_any_setting_that_changes_the_numbers_differs(manifests, tiny_gpt2, change):
    assert not same_run(manifest(manifests["pretrained"]), str(tiny_gpt2), **{**SMALL, **change})


def test_a_setting_added_since_a_run_counts_as_its_default(manifests, tiny_gpt2):
    run = manifest(manifests["pretrained"])
    del run["settings"]["sampler"]  # a run.json written before --sampler existed: the sequential sampler
    assert same_run(run, str(tiny_gpt2), **SMALL) and same_run(run, str(tiny_gpt2), sampler="sequential", **SMALL)
    assert not same_run(run, str(tiny_gpt2), sampler="paper", **SMALL)


def test_model_is_compared_as_given(manifests, tiny_gpt2):
    assert not same_run(manifest(manifests["pretrained"]), str(tiny_gpt2) + "/", **SMALL)


def test_options_that_do_not_change_the_numbers_are_ignored(manifests, tiny_gpt2):
    run = manifest(manifests["pretrained"])
    assert same_run(run, str(tiny_gpt2), device="cpu", quiet=False, resume=True, trust_remote_code=True,
                    dtype="auto", **SMALL)
    assert same_run(run, str(tiny_gpt2), dtype="float32", **SMALL)  # the dtype it recorded


def test_init_seed_matters_only_for_random_weights(manifests, tiny_gpt2):
    assert same_run(manifest(manifests["pretrained"]), str(tiny_gpt2), init_seed=7, **SMALL)
    random = manifest(manifests["random"])
    assert same_run(random, str(tiny_gpt2), init="random", init_seed=3, **SMALL)
    assert not same_run(random, str(tiny_gpt2), init="random", init_seed=4, **SMALL)
    assert not same_run(random, str(tiny_gpt2), init="random", **SMALL)  # default seed 0


def test_existing_run_loads_only_a_complete_matching_folder(manifests, tiny_gpt2, tmp_path):
    assert existing_run(manifests["pretrained"], str(tiny_gpt2), **SMALL).run["settings"]["num_seqs"] == 2
    assert existing_run(manifests["pretrained"], str(tiny_gpt2), **{**SMALL, "num_seqs": 5}) is None
    assert existing_run(tmp_path / "missing", str(tiny_gpt2), **SMALL) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert existing_run(broken, str(tiny_gpt2), **SMALL) is None


def test_resolve_runs_reuses_a_matching_folder_and_reprobes_otherwise(tiny_gpt2, tmp_path, monkeypatch):
    import condense.api

    first = resolve_runs([str(tiny_gpt2)], runs_dir=tmp_path, quiet=True, **SMALL)[0]
    calls = []
    real = condense.api.probe_to_folder
    monkeypatch.setattr(condense.api, "probe_to_folder", lambda *a, **k: calls.append(k) or real(*a, **k))
    again = resolve_runs([str(tiny_gpt2)], runs_dir=tmp_path, quiet=True, init_seed=9, **SMALL)[0]
    assert calls == [] and again.run["token_hash"] == first.run["token_hash"]  # seed ignored: pretrained
    resolve_runs([str(tiny_gpt2)], runs_dir=tmp_path, quiet=True, **{**SMALL, "num_seqs": 3})
    assert len(calls) == 1


def test_a_run_of_a_model_in_memory_is_never_reused(manifests, tiny_gpt2):
    # the same manifest, as a probe of a model object would record it (the object may have been trained since)
    run = {**manifest(manifests["pretrained"]), "source": "memory"}
    assert not same_run(run, str(tiny_gpt2), **SMALL)


def test_rerun_loads_the_commit_the_run_loaded(manifests, tiny_gpt2, monkeypatch, tmp_path):
    import shutil

    import condense.api as api

    folder = shutil.copytree(manifests["pretrained"], tmp_path / "hub-run")
    run = manifest(folder)
    run.update(model="org/model", commit="a" * 40, load_options={**run["load_options"], "revision": "main"})
    (folder / "run.json").write_text(json.dumps(run))
    asked = {}
    monkeypatch.setattr(api, "probe_to_folder", lambda model, out, **options: asked.update(model=model, **options))
    api.rerun(folder, tmp_path / "again")
    assert asked["model"] == "org/model" and asked["revision"] == "a" * 40  # not "main", which may have moved
    assert {k: asked[k] for k in run["settings"]} == run["settings"]
