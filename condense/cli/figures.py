"""``condense compare``, ``condense family`` and ``condense plot``: figures from runs or models."""

from __future__ import annotations

from pathlib import Path

import click

from condense.cli.app import cli, heavy_imports, probe_options


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
        click.option("--labels", default=None, metavar="A,B,...",
                     help="Comma-separated figure labels, one per item in the order given (default: each "
                          "checkpoint's own name, with its quantisation)."),
    ]):
        f = option(f)
    return f


def _split_labels(labels: str | None, items) -> list[str] | None:
    """``--labels`` as a list, checked against the items before any probe runs."""
    from condense.errors import CondenseError

    if labels is None:
        return None
    parts = [p.strip() for p in labels.split(",")]
    if len(parts) != len(items) or not all(parts):
        raise CondenseError(f"bad --labels {labels!r}: give {len(items)} non-empty comma-separated labels, "
                            "one per item in the order given")
    return parts


def _runs_figure(kind: str, items, out, vmax, ylim, style, runs_dir, labels, opts, **extra) -> None:
    with heavy_imports():
        from condense import plotting
        from condense.api import check_figure_path, resolve_runs, save_figure

    check_figure_path(out)
    chosen = _split_labels(labels, items)
    results = resolve_runs(list(items), runs_dir, **opts)
    draw = {"compare": plotting.compare_figure, "family": plotting.family_figure}[kind]
    figure = draw(results, vmax=vmax, ylim=ylim, style=style, labels=chosen, **extra)
    click.echo(f"wrote {save_figure(figure, out)}")


@cli.command()
@click.argument("items", nargs=-1, required=True)
@_figure_options
@probe_options
def compare(items, out, vmax, ylim, style, runs_dir, labels, **opts) -> None:
    """Compare runs or models (ITEMS: run folders or model ids) side by side."""
    _runs_figure("compare", items, out, vmax, ylim, style, runs_dir, labels, opts)


@cli.command()
@click.argument("items", nargs=-1, required=True)
@_figure_options
@click.option("--title", default=None, help="Title of the trend panel (default: condensation trend by model size).")
@probe_options
def family(items, out, vmax, ylim, style, runs_dir, labels, title, **opts) -> None:
    """A model family ordered by size: heatmaps in a row and the Spearman/Kendall trend panel."""
    _runs_figure("family", items, out, vmax, ylim, style, runs_dir, labels, opts, title=title)


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
    with heavy_imports():
        from condense.api import check_figure_path, save_figure
        from condense.results import load

    target = check_figure_path(out or Path(run) / "heatmap.png")
    result = load(run)
    click.echo(f"wrote {save_figure(result.plot(vmax=vmax, ylim=ylim, cmap=cmap, style=style), target)}")
