"""``condense sweep SPEC``: every probe of a TOML/YAML spec, locally or on Ray, with a summary."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click

from condense.cli.app import cli, heavy_imports

__all__ = ["sweep"]


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Sweep folder: one run folder per run, plus summary.csv (default results/<spec name>).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one run after another here; ray: one Ray task per run, with the spec's resources.")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (ray.init(address=...), e.g. auto or HOST:6379); default: a local instance.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Seconds between checkpoints of a running probe (0: only when interrupted).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar inside runs.")
def sweep(spec: Path, out: Path | None, executor: str, ray_address: str | None, checkpoint_every: float,
          quiet: bool) -> None:
    """Run every probe listed in SPEC (models x corpora x settings; see condense.sweep for the format).

    Finished runs with the same settings are skipped; a failing run is reported and the others go
    on. Exit code 0 when every run is ok or skipped, 1 when some failed, 2 for a bad spec.
    """
    with heavy_imports():
        from condense.sweep import load_spec, run_sweep, summary_frame

    if ray_address and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    runs = load_spec(spec)
    out = out or Path("results") / spec.stem
    rows = run_sweep(runs, out, executor, ray_address, quiet, echo=click.echo,
                     checkpoint_every=checkpoint_every)
    click.echo(_printable(summary_frame(rows)).to_string(index=False, na_rep=""))
    click.echo(f"summary: {out / 'summary.csv'}")
    failed = sum(row["status"] == "failed" for row in rows)
    if failed:
        click.echo(f"condense: {failed} of {len(rows)} runs failed (errors in {out / 'summary.csv'})", err=True)
        sys.exit(1)


def _printable(frame):
    """summary.csv for a terminal: file names instead of paths, errors cut to 70 characters."""
    short = {col: frame[col].map(lambda p: Path(p).name if os.path.isabs(p) else p) for col in ("model", "corpus", "folder")}
    frame = frame.assign(**short, error=frame["error"].map(lambda e: e if len(e) <= 70 else e[:69] + "…"))
    for col in ("spearman", "kendall", "last_half_mean_cos"):
        frame[col] = frame[col].map(lambda v: "" if v is None or math.isnan(v) else f"{v:.4f}")
    return frame
