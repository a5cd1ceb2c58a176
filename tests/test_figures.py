"""compare / family / plot: real figures written to disk, checked through the Figure objects."""

import os

import matplotlib
import numpy as np
import pytest

import condense
from condense.api import resolve_runs, save_figure
from condense.errors import CondenseError
from condense.plotting import compare_figure, family_figure, heatmap_figure
from tests.test_cli import run

SMALL = dict(num_seqs=3, max_length=32, quiet=True, spectrum_seqs=1)


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for arch in ("gpt2", "llama", "bert"):
        out[arch] = condense.probe(str(tiny_models[arch]), **SMALL).save(root / arch)
    return out


def test_heatmap_figure_axes_and_colour_scale(runs):
    fig = heatmap_figure(condense.load(runs["gpt2"]), vmax=5)
    heat, bar = fig.axes
    assert heat.get_xlabel() == "layer fraction" and heat.get_ylabel() == "cosine similarity"
    assert "Spearman" in heat.get_title() and bar.get_ylabel() == "density"
    assert heat.collections[0].get_clim() == (0.0, 5.0)
    result = condense.load(runs["gpt2"])
    within, across = heat.lines
    np.testing.assert_allclose(within.get_ydata(), result.layers["mean_cos"])
    np.testing.assert_allclose(across.get_ydata(), result.layers["cross_mean_cos"])
    assert [t.get_text() for t in heat.get_legend().get_texts()] == ["mean, within a text", "mean, across texts"]
    matplotlib.pyplot.close(fig)


def test_compare_figure_shares_one_colour_scale(runs):
    results = [condense.load(runs[a]) for a in ("gpt2", "llama", "bert")]
    fig = compare_figure(results, vmax=7)
    heatmaps = [ax for ax in fig.axes if ax.collections and ax.get_ylabel() != "density"]
    assert len(heatmaps) == 3 and len({ax.collections[0].get_clim() for ax in heatmaps}) == 1
    titles = [ax.get_title() for ax in fig.axes]
    assert "condensation by depth" in titles and "cone half-angle" in titles
    overlay = next(ax for ax in fig.axes if ax.get_title() == "condensation by depth")
    assert len(overlay.lines) == 6  # per run: within a text (solid), across texts (dashed)
    np.testing.assert_allclose(overlay.lines[0].get_ydata(), results[0].layers["mean_cos"])
    np.testing.assert_allclose(overlay.lines[1].get_ydata(), results[0].layers["cross_mean_cos"])
    assert overlay.lines[1].get_linestyle() == "--"
    assert [t.get_text() for t in overlay.get_legend().get_texts()][-2:] == ["within a text", "across texts"]
    assert sum(ax.get_ylabel() == "density" for ax in fig.axes) == 1  # one shared colour bar


def test_family_figure_orders_by_parameter_count(runs):
    results = [condense.load(runs[a]) for a in ("llama", "gpt2", "bert")]
    fig = family_figure(results)
    trend = next(ax for ax in fig.axes if "trend" in ax.get_title())
    labels = [t.get_text().split("\n")[0] for t in trend.get_xticklabels()]
    sizes = {r.name: r.run["parameters"] for r in results}
    assert labels == sorted(sizes, key=sizes.get)
    assert [line.get_label() for line in trend.lines[:2]] == ["Spearman ρ", "Kendall τ-b"]


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_figure_formats(runs, tmp_path, suffix):
    path = save_figure(heatmap_figure(condense.load(runs["gpt2"])), tmp_path / f"h{suffix}")
    head = path.read_bytes()[:5]
    assert {".png": b"\x89PNG\r", ".pdf": b"%PDF-", ".svg": b"<?xml"}[suffix] == head
    with pytest.raises(CondenseError, match="must end in .png, .pdf, .svg"):
        save_figure(heatmap_figure(condense.load(runs["gpt2"])), tmp_path / "h.jpeg")


def test_resolve_runs_reuses_a_run_with_equal_settings(tiny_gpt2, tmp_path):
    first = resolve_runs([str(tiny_gpt2)], tmp_path, **SMALL)[0]
    folder = tmp_path / "gpt2__builtin"
    stamp = os.stat(folder / "layers.csv").st_mtime_ns
    again = resolve_runs([str(tiny_gpt2)], tmp_path, **SMALL)[0]
    assert os.stat(folder / "layers.csv").st_mtime_ns == stamp  # reused, not re-probed
    assert again.run["token_hash"] == first.run["token_hash"]
    changed = resolve_runs([str(tiny_gpt2)], tmp_path, **{**SMALL, "num_seqs": 2})[0]
    assert changed.run["counts"]["sequences"] == 2  # other settings: probed again


def test_compare_and_family_cli(runs, tiny_models, tmp_path):
    p = run("compare", runs["gpt2"], tiny_models["llama"], "--out", tmp_path / "cmp.svg", "--num-seqs", 2,
            "--max-length", 16, "--runs-dir", tmp_path / "runs", "-q")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cmp.svg").stat().st_size > 10_000 and (tmp_path / "runs" / "llama__builtin").is_dir()
    p = run("family", runs["gpt2"], runs["llama"], runs["bert"], "--out", tmp_path / "fam.png")
    assert p.returncode == 0, p.stderr and (tmp_path / "fam.png").stat().st_size > 10_000
    p = run("plot", runs["gpt2"], "--out", tmp_path / "p.pdf", "--ylim", "-0.2", "1", "--cmap", "viridis")
    assert p.returncode == 0, p.stderr
    bad = run("compare", runs["gpt2"], "--out", tmp_path / "x.gif")
    assert bad.returncode == 2 and "must end in" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_random_init_is_seeded(tiny_gpt2):
    a = condense.probe(str(tiny_gpt2), init="random", init_seed=1, **SMALL)
    b = condense.probe(str(tiny_gpt2), init="random", init_seed=1, **SMALL)
    c = condense.probe(str(tiny_gpt2), init="random", init_seed=2, **SMALL)
    pretrained = condense.probe(str(tiny_gpt2), **SMALL)
    assert a.layers.equals(b.layers)
    assert not np.allclose(a.layers["mean_cos"], c.layers["mean_cos"])
    assert not np.allclose(a.layers["mean_cos"], pretrained.layers["mean_cos"])
    assert a.run["init"] == "random" and a.run["init_seed"] == 1


def test_shipped_config_random_init_offline():
    r = condense.probe("gpt2", init="random", layers="0,1", num_seqs=1, max_length=16, quiet=True, spectrum_seqs=0)
    assert r.run["config_source"] == "shipped:gpt2.json" and r.run["parameters"] == 124_439_808
    assert r.run["tokenizer_source"].startswith("fallback:")
    assert r.name == "gpt2 (random init)"
