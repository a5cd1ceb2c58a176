"""``condense compare``, ``condense family`` and ``condense plot``: figures from runs or models."""

from __future__ import annotations

from pathlib import Path

import click

from condense.cli.app import cli, probe_options


def _figure_options(f):
    for option in reversed([
        click.option("--out", type=click.Path(path_type=Path), required=True,
                     help="Figure file: .png, .pdf or .svg (format from the suffix)."),
        click.option("--vmax", type=float, default=10.0, show_default=True, help="Top of the colour scale."),
        click.option("--ylim", type=(float, float), default=(-1.0, 1.0), show_default=True,
                     help="Cosine similarity range shown."),
        click.option("--style", default="whitegrid", show_default=True, help="seaborn style."),
        click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
                     help="Where models given by id are probed (an existing run with equal settings is reused)."),
    ]):
        f = option(f)
    return f


def _runs_figure(kind: str, items, out, vmax, ylim, style, runs_dir, opts) -> None:
    from condense import plotting
    from condense.api import check_figure_path, resolve_runs, save_figure

    check_figure_path(out)
    results = resolve_runs(list(items), runs_dir, **opts)
    draw = {"compare": plotting.compare_figure, "family": plotting.family_figure}[kind]
    click.echo(f"wrote {save_figure(draw(results, vmax=vmax, ylim=ylim, style=style), out)}")


@cli.command()
@click.argument("items", nargs=-1, required=True)
@_figure_options
@probe_options
def compare(items, out, vmax, ylim, style, runs_dir, **opts) -> None:
    """Compare runs or models (ITEMS: run folders or model ids) side by side."""
    _runs_figure("compare", items, out, vmax, ylim, style, runs_dir, opts)


@cli.command()
@click.argument("items", nargs=-1, required=True)
@_figure_options
@probe_options
def family(items, out, vmax, ylim, style, runs_dir, **opts) -> None:
    """A model family ordered by size: heatmaps in a row and the Spearman/Kendall trend panel."""
    _runs_figure("family", items, out, vmax, ylim, style, runs_dir, opts)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Figure file (.png/.pdf/.svg); default RUN/heatmap.png.")
@click.option("--vmax", type=float, default=10.0, show_default=True, help="Top of the colour scale.")
@click.option("--ylim", type=(float, float), default=(-1.0, 1.0), show_default=True, help="Cosine range shown.")
@click.option("--cmap", default="Reds", show_default=True, help="matplotlib colour map.")
@click.option("--style", default="whitegrid", show_default=True, help="seaborn style.")
def plot(run, out, vmax, ylim, cmap, style) -> None:
    """Redraw one run's heatmap with other display options."""
    from condense.api import check_figure_path, save_figure
    from condense.results import load

    target = check_figure_path(out or Path(run) / "heatmap.png")
    result = load(run)
    click.echo(f"wrote {save_figure(result.plot(vmax=vmax, ylim=ylim, cmap=cmap, style=style), target)}")
