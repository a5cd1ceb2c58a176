"""The probe's Gaussian baseline cache: the same values as computing them, keyed by everything they
depend on, never trusted when damaged, never fatal when the cache cannot be written."""

import math
import shutil
from pathlib import Path

import pytest
import torch

import condense
from condense.metrics import gaussian_baseline
from condense.probing import baselines
from condense.probing.baselines import baseline_key, cached_gaussian_baseline


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CONDENSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "baselines"


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                        ((a[k], b[k]) for k in a))


def test_a_cached_baseline_is_the_computed_one_bit_for_bit(cache):
    fresh = gaussian_baseline(40, 16, seed=3)
    first = cached_gaussian_baseline(40, 16, seed=3)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("gaussian-40x16-seed3-")
    second = cached_gaussian_baseline(40, 16, seed=3)
    assert _same(first, fresh) and _same(second, fresh)
    assert all(type(v) is float for v in second.values())


def test_the_cache_is_read_not_recomputed(cache, monkeypatch):
    cached_gaussian_baseline(30, 8)
    (file,) = cache.iterdir()
    file.write_text('{"mev": 0.125}')  # a value only the file holds
    monkeypatch.setattr(baselines, "gaussian_baseline", lambda *a, **k: pytest.fail("computed again"))
    assert cached_gaussian_baseline(30, 8) == {"mev": 0.125}


def test_each_argument_has_a_file_of_its_own(cache):
    for args in ((30, 8, 0), (31, 8, 0), (30, 9, 0), (30, 8, 1)):
        assert _same(cached_gaussian_baseline(*args[:2], seed=args[2]), gaussian_baseline(*args[:2], seed=args[2]))
    assert len(list(cache.iterdir())) == 4


def test_the_key_changes_with_the_libraries_and_the_cpu(monkeypatch):
    key = baseline_key(30, 8, 0)
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert baseline_key(30, 8, 0) != key
    monkeypatch.undo()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ANOTHER")
    assert baseline_key(30, 8, 0) != key
    monkeypatch.undo()
    assert baseline_key(30, 8, 0) == key


def test_the_key_changes_with_any_metrics_source_file(tmp_path, monkeypatch):
    import condense.metrics

    copy = tmp_path / "metrics"
    shutil.copytree(Path(condense.metrics.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(condense.metrics, "__file__", str(copy / "__init__.py"))
    baselines._metrics_source.cache_clear()
    try:
        before = baseline_key(30, 8, 0)
        streaming = copy / "streaming.py"
        streaming.write_text(streaming.read_text() + "\n# a change\n")
        baselines._metrics_source.cache_clear()
        assert baseline_key(30, 8, 0) != before
    finally:
        monkeypatch.undo()
        baselines._metrics_source.cache_clear()


@pytest.mark.parametrize("content", ["", '{"mev": 0.1', '["not", "a", "dict"]', '{"mev": "text"}'])
def test_a_damaged_file_is_computed_again_and_replaced(cache, content):
    cached_gaussian_baseline(30, 8)
    (file,) = cache.iterdir()
    file.write_text(content)
    assert _same(cached_gaussian_baseline(30, 8), gaussian_baseline(30, 8))
    assert _same(baselines._read(file), gaussian_baseline(30, 8))


def test_an_unwritable_cache_only_costs_the_computation(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CONDENSE_CACHE", str(blocker))  # its baselines folder cannot be made
    assert _same(cached_gaussian_baseline(30, 8), gaussian_baseline(30, 8))


def test_no_temporary_file_is_left_behind(cache):
    for n in (20, 21, 22):
        cached_gaussian_baseline(n, 8)
    assert sorted(f.name.split("-")[1] for f in cache.iterdir()) == ["20x8", "21x8", "22x8"]


def test_a_probe_through_the_cache_writes_the_same_layers_csv(cache, tiny_gpt2, docs_jsonl, tmp_path, monkeypatch):
    settings = dict(corpus=str(docs_jsonl), num_seqs=3, max_length=24, quiet=True)
    condense.probe(str(tiny_gpt2), **settings).save(tmp_path / "cold", heatmap=False)
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr(baselines, "gaussian_baseline", lambda *a, **k: pytest.fail("computed again"))
    condense.probe(str(tiny_gpt2), **settings).save(tmp_path / "warm", heatmap=False)
    assert (tmp_path / "cold" / "layers.csv").read_bytes() == (tmp_path / "warm" / "layers.csv").read_bytes()
