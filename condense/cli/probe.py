"""``condense probe`` and ``condense show``."""

from __future__ import annotations

from pathlib import Path

import click

from condense.cli.app import cli, heavy_imports, probe_options


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default results/<model>__<corpus>).")
@probe_options
def probe(model: str, out: Path | None, **opts) -> None:
    """Probe MODEL (alias, local folder, .gguf file or hub id) and write a run folder."""
    with heavy_imports():
        from condense.api import default_run_folder, probe_to_folder

    folder = probe_to_folder(model, out or default_run_folder(model, opts["corpus"], opts["init"]), **opts)
    click.echo(f"wrote {folder}/ (layers.csv, histograms.npz, run.json, heatmap.png)")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
def show(run: Path) -> None:
    """Print a run folder's per-layer table and trend statistics."""
    from condense.results import load

    click.echo(load(run).summary())


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write here instead of replacing RUN.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def rerun(run: Path, out: Path | None, quiet: bool) -> None:
    """Repeat a run from its run.json (same model, load options and settings)."""
    with heavy_imports():
        from condense.api import rerun as rerun_folder

    click.echo(f"wrote {rerun_folder(run, out, quiet=quiet)}/")
