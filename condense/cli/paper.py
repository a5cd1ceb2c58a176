"""``condense paper table`` and ``condense paper check``: the paper's values, and runs checked against them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from condense.cli.app import cli
from condense.errors import CondenseError
from condense.reproduce import DEFAULT_TOLERANCE
from condense.results.atomic import atomic_file

__all__ = ["paper"]

_SHOWN = ("id", "run_model", "spearman", "paper_spearman", "diff_spearman", "kendall", "paper_kendall",
          "diff_kendall", "status")


@cli.group()
def paper() -> None:
    """The paper-reproduction kit: the paper's values (table) and runs compared with them (check)."""


@paper.command()
@click.option("--family", default=None, help="Only this family (e.g. GPT2, Qwen3; case-insensitive).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the table to this CSV file.")
def table(family: str | None, out: Path | None) -> None:
    """Print the paper's values: one row per model and dataset (Spearman, Kendall, source figure)."""
    from condense.reproduce import paper_table

    frame = paper_table()
    if family:
        frame = frame[frame["family"].str.lower() == family.lower()]
        if frame.empty:
            known = ", ".join(dict.fromkeys(paper_table()["family"]))
            raise CondenseError(f"no family {family!r} in the paper's table; known: {known}")
    if out:
        _write_csv(frame, out)
    shown = frame[["id", "model", "size", "dataset", "spearman", "kendall", "finding"]]
    click.echo(shown.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.2f}"))
    if out:
        click.echo(f"wrote {out}")


@paper.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--table", "table_path", type=click.Path(path_type=Path), default=None,
              help="CSV of expected values (columns id, model, dataset, spearman, ...); default: the paper's.")
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
              help="Largest |ours - paper| of Spearman (and Kendall, where given) counted as inside.")
@click.option("--pair", "pairs", multiple=True, metavar="RUN=ROW",
              help="Compare run folder RUN with paper row ROW (a row id or hub id), e.g. a stand-in model. Repeatable.")
@click.option("--require-all", is_flag=True, help="Also fail (exit 1) when a paper row has no run.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the full report to this CSV file.")
def check(runs: tuple[Path, ...], table_path: Path | None, tolerance: float, pairs: tuple[str, ...],
          require_all: bool, out: Path | None) -> None:
    """Compare finished runs (RUNS: run folders, sweep folders, folders of runs) with the paper's values.

    Exit code 0 when every comparison is within the tolerance, 1 when one is outside (or, with
    --require-all, a paper row has no run), 2 for bad input.
    """
    from condense.reproduce import check_runs, failing

    report = check_runs(list(runs), table_path, tolerance, [_split_pair(p) for p in pairs])
    if out:
        _write_csv(report, out)
    compared = report[report["status"].isin(["inside", "outside"])]
    if len(compared):
        click.echo(_printable(compared).to_string(index=False))
        noted = compared[compared["notes"] != ""]
        if len(noted):
            click.echo("notes:")
            for row in noted.itertuples():
                click.echo(f"  {row.id} ({Path(row.run).name}): {row.notes}")
    missing = report[report["status"] == "missing"]
    unmatched = report[report["status"] == "unmatched"]
    outside = int((compared["status"] == "outside").sum())
    click.echo(f"{len(compared)} compared: {len(compared) - outside} inside, {outside} outside tolerance {tolerance:g}")
    if len(missing):
        hint = "" if require_all else " (--require-all to fail on them)"
        click.echo(f"{len(missing)} paper rows have no run{hint}:")
        for line in _missing_lines(missing, report):
            click.echo(f"  {line}")
    for row in unmatched.itertuples():
        click.echo(f"no paper row for run {row.run} ({row.run_model}): pair it with --pair {row.run}=ROW")
    if out:
        click.echo(f"report: {out}")
    bad = failing(report, require_all)
    if len(bad):
        what = f"{outside} of {len(compared)} comparisons outside tolerance {tolerance:g}" if outside else ""
        if require_all and len(missing):
            what += ("; " if what else "") + f"{len(missing)} paper rows without a run"
        click.echo(f"condense: {what}", err=True)
        sys.exit(1)


def _missing_lines(missing, report) -> list[str]:
    """One line per family: its missing row ids, or 'all N' when none of the family has a run."""
    lines = []
    for family, rows in missing.groupby("family", sort=False):
        total = int(report["family"].eq(family).sum())
        ids = "all " + str(total) if len(rows) == total and total > 1 else ", ".join(rows["id"])
        lines.append(f"{family or '(no family)'}: {ids}")
    return lines


def _split_pair(text: str) -> tuple[str, str]:
    run, sep, row = text.rpartition("=")
    if not sep or not run or not row:
        raise CondenseError(f"bad --pair {text!r}: give RUN=ROW, e.g. results/coder-0.5b=qwen2.5-0.5b@wikipedia")
    return run, row


def _printable(frame):
    """Numbers to 3 decimals, run folders by name, proxies marked with '*' after the model."""
    frame = frame.assign(run_model=[m + (" *proxy" if p else "") for m, p in zip(frame["run_model"], frame["proxy"])])
    frame = frame[list(_SHOWN)].copy()
    for col in _SHOWN[2:-1]:
        frame[col] = frame[col].map(lambda v: "" if v is None or math.isnan(v) else f"{v:+.3f}")
    return frame


def _write_csv(frame, out: Path) -> None:
    """Write ``frame`` to ``out`` through a temporary file and a rename (never half-written)."""
    out = Path(out)
    if out.is_dir():
        raise CondenseError(f"--out {str(out)!r} is a folder; give a .csv file path")
    if not out.parent.is_dir():
        raise CondenseError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    try:
        with atomic_file(out) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    except OSError as err:  # e.g. no permission; a full disk is already a one-line StorageError
        raise CondenseError(f"--out {str(out)!r} is not writable ({err.strerror})") from None
