"""Compare finished runs with the paper's values: per model our rho/tau, the paper's, the difference.

A run is matched to the table's rows with its hub id (``gpt2`` = ``openai-community/gpt2``) and its
corpus; a run on a corpus the paper did not use for that model is compared with the model's
WikiText-103 (``wikipedia``) row, with a note. ``pairs`` match a run to a row by hand (a stand-in
model, a local checkpoint, a row the paper's model is not on the hub for); such a comparison is
flagged as a proxy when the run's model is not the row's. Every difference that makes a comparison
unfair (aggregation, number of texts, tokens per text, another text sampler, random weights, quantised
GGUF weights, another corpus, a layer subset, centring, ...) becomes a note on its row, never a silent pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from condense.errors import CondenseError
from condense.reproduce import DEFAULT_TOLERANCE
from condense.reproduce.runs import FailedRun, FoundRun, canonical_model, collect_runs, run_hub_id, run_label
from condense.reproduce.table import paper_table, read_table
from condense.results import ProbeResult

__all__ = ["CHECK_COLUMNS", "DEFAULT_TOLERANCE", "DEFAULT_DATASET", "STATUSES", "check_runs", "failing", "fairness_notes"]

DEFAULT_DATASET = "wikipedia"  # the paper's default corpus (WikiText-103)
STATUSES = ("inside", "outside", "missing", "unmatched")
CHECK_COLUMNS = ("id", "family", "size", "dataset", "paper_model", "run", "run_model", "proxy",
                 "spearman", "paper_spearman", "diff_spearman", "kendall", "paper_kendall", "diff_kendall",
                 "tolerance", "status", "notes", "source")
_SLACK = 1e-9  # a difference equal to the tolerance counts as inside despite float rounding


def check_runs(paths: Sequence[str | Path], table: str | Path | pd.DataFrame | None = None,
               tolerance: float = DEFAULT_TOLERANCE,
               pairs: Sequence[tuple[str | Path, str]] = ()) -> pd.DataFrame:
    """Compare the runs under ``paths`` with the paper's values; one row per comparison.

    ``paths``: run folders, sweep folders or folders of run folders. ``table``: a CSV path or a
    DataFrame from :func:`read_table` (default: the shipped :func:`paper_table`). ``tolerance``:
    the largest |ours - paper| counted as inside, for Spearman and (where the paper gives it)
    Kendall. ``pairs``: (run folder or run folder name, row id or hub id) matched by hand; a paired
    run is compared only with the rows it is paired with.

    Returns a DataFrame with :data:`CHECK_COLUMNS`, in table order: one row per (run, paper row)
    comparison with ``status`` ``inside`` or ``outside`` (``diff_* = ours - paper``; a NaN statistic
    is outside), one ``missing`` row per paper row without a run, then one ``unmatched`` row per run
    that matches no paper row. ``notes`` lists what makes a comparison unfair; ``proxy`` is True
    when a run stands in for another model.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise CondenseError(f"bad --tolerance {tolerance!r}: give a number >= 0 (default {DEFAULT_TOLERANCE})")
    if table is None:
        table = paper_table()
    elif not isinstance(table, pd.DataFrame):
        table = read_table(table)
    if not paths and not pairs:
        raise CondenseError("no runs to check: give run folders, sweep folders or --pair RUN=ROW")
    found, failed = collect_runs(list(paths))
    by_hand = _resolve_pairs(pairs, found, table)
    comparisons: dict[int, list[dict[str, Any]]] = {}
    unmatched = []
    for run in found:
        indices = by_hand.get(run.folder.resolve())
        manual = indices is not None
        if not manual:
            indices = _rows_for(run.meta, table, automatic=True)
        if not indices:
            unmatched.append(_unmatched(run))
        for i in indices:
            comparisons.setdefault(i, []).append(_compare(run, table.loc[i], tolerance, manual))
    records = []
    for i, row in table.iterrows():
        records += comparisons.get(i) or [_missing(row, failed, tolerance)]
    return pd.DataFrame(records + unmatched, columns=list(CHECK_COLUMNS))


def failing(report: pd.DataFrame, require_all: bool = False) -> pd.DataFrame:
    """The rows of a :func:`check_runs` report that fail the check: outside the tolerance, and
    with ``require_all`` also paper rows without a run."""
    bad = ("outside", "missing") if require_all else ("outside",)
    return report[report["status"].isin(bad)]


def _resolve_pairs(pairs: Sequence[tuple[str | Path, str]], found: list[FoundRun],
                   table: pd.DataFrame) -> dict[Path, list[int]]:
    """{run folder: table row indices} for runs matched by hand; runs not in ``found`` are added to it."""
    by_hand: dict[Path, list[int]] = {}
    for run_ref, row_ref in pairs:
        run = _pair_run(str(run_ref), found)
        ids = table.index[table["id"] == row_ref].tolist() or _rows_for(
            {**run.meta, "hub_id": row_ref}, table, automatic=False)
        if not ids:
            raise CondenseError(f"--pair row {row_ref!r} is neither a row id nor a model of the table; "
                                "see `condense paper table` for the ids")
        listed = by_hand.setdefault(run.folder.resolve(), [])
        listed += [i for i in ids if i not in listed]
    return by_hand


def _pair_run(ref: str, found: list[FoundRun]) -> FoundRun:
    path = Path(ref)
    if path.is_dir() and (path / "run.json").exists():
        for run in found:
            if run.folder.resolve() == path.resolve():
                return run
        run = FoundRun(path, ProbeResult.load(path))
        found.append(run)
        return run
    named = [run for run in found if run.folder.name == ref]
    if len(named) == 1:
        return named[0]
    why = "names several of the runs given" if named else "is not a run folder nor the name of one of the runs given"
    raise CondenseError(f"--pair run {ref!r} {why}; give the run folder's path")


def _rows_for(meta: dict[str, Any], table: pd.DataFrame, automatic: bool) -> list[int]:
    """Rows of the run's model on the run's corpus; else on the paper's default corpus; else all of them."""
    model = canonical_model(run_hub_id(meta))
    if not model:
        return []
    rows = table[(table["model"].map(canonical_model) == model) & (table["auto_match"] | (not automatic))]
    corpus = meta.get("settings", {}).get("corpus")
    for wanted in (corpus, DEFAULT_DATASET):
        same = rows[rows["dataset"] == wanted]
        if len(same):
            return same.index.tolist()
    return rows.index.tolist()


def fairness_notes(meta: dict[str, Any], row: pd.Series) -> list[str]:
    """What differs between a run (its run.json) and the paper's measurement of ``row``."""
    settings = meta.get("settings", {})
    notes = []
    aggregate = settings.get("aggregate", "pooled")
    if aggregate != row["convention"]:
        notes.append(f"{aggregate} aggregation (paper: {row['convention']}; the numbers are not comparable)")
    texts = meta.get("counts", {}).get("sequences", settings.get("num_seqs"))
    if texts != row["num_texts"]:
        notes.append(f"{texts} texts (paper: {row['num_texts']})")
    if settings.get("max_length") != row["max_length"]:
        notes.append(f"max_length {settings.get('max_length')} (paper: {row['max_length']})")
    init = meta.get("init", "pretrained")
    if init != row["init"]:
        notes.append("random init (paper: trained weights)" if init == "random"
                     else f"{init} weights (paper: {row['init']} initialisation)")
    quantised = meta.get("quantization") or str(meta.get("resolved", "")).endswith(".gguf")
    if quantised:
        kind = meta.get("quantization") if isinstance(meta.get("quantization"), str) else "GGUF"
        notes.append(f"quantised weights ({kind}; paper: original weights)")
    if settings.get("sampler", "sequential") != "paper":
        notes.append(f"{settings.get('sampler', 'sequential')} texts (paper: random stretches, --sampler paper)")
    corpus = str(settings.get("corpus", ""))
    if corpus != row["dataset"]:
        notes.append(f"corpus {Path(corpus).name or corpus} (paper: {row['dataset']})")
    if (meta.get("revision") or "main") != (row["revision"] or "main"):
        notes.append(f"revision {meta.get('revision') or 'main'} (paper: {row['revision'] or 'main'})")
    if settings.get("layers", "all") != "all":
        notes.append(f"layers {settings.get('layers')} (paper: all)")
    if settings.get("exclude_first_token"):
        notes.append("first token excluded (paper: kept)")
    if settings.get("center", "none") != "none":
        notes.append(f"centred per {settings.get('center')} (paper: not centred)")
    if settings.get("paper_ragged"):
        notes.append("ragged text lengths (paper: equal lengths)")
    return notes


def _compare(run: FoundRun, row: pd.Series, tolerance: float, manual: bool) -> dict[str, Any]:
    meta = run.meta
    ours_rho, ours_tau = _statistic(run, "spearman"), _statistic(run, "kendall")
    diff_rho = ours_rho - row["spearman"]
    has_tau = not math.isnan(row["kendall"])
    diff_tau = ours_tau - row["kendall"] if has_tau else math.nan
    inside = abs(diff_rho) <= tolerance + _SLACK and (not has_tau or abs(diff_tau) <= tolerance + _SLACK)
    run_model, paper_model = canonical_model(run_hub_id(meta)), canonical_model(row["model"])
    proxy = manual and (not paper_model or run_model != paper_model)
    notes = []
    if proxy:
        stands_for = row["model"] or f"{row['id']} (not on the hub)"
        notes.append(f"proxy: {run_label(meta)} stands in for {stands_for}")
    notes += fairness_notes(meta, row)
    if math.isnan(ours_rho) or (has_tau and math.isnan(ours_tau)):
        notes.append("the run has no trend statistic (fewer than 3 layers or a constant mean cosine)")
    return {**_row_fields(row, tolerance), "run": str(run.folder), "run_model": run_label(meta), "proxy": proxy,
            "spearman": ours_rho, "diff_spearman": diff_rho, "kendall": ours_tau, "diff_kendall": diff_tau,
            "status": "inside" if inside else "outside", "notes": "; ".join(notes)}


def _statistic(run: FoundRun, key: str) -> float:
    value = run.result.trend.get(key)
    return math.nan if value is None else float(value)


def _missing(row: pd.Series, failed: list[FailedRun], tolerance: float) -> dict[str, Any]:
    model = canonical_model(row["model"])
    errors = [f.error for f in failed if model and canonical_model(f.model) == model and f.corpus == row["dataset"]]
    notes = [f"sweep run failed: {errors[0]}"] if errors else []
    if not row["auto_match"]:
        notes.append("compared only with --pair RUN=" + row["id"])
    return {**_row_fields(row, tolerance), "run": "", "run_model": "", "proxy": False, "spearman": math.nan,
            "diff_spearman": math.nan, "kendall": math.nan, "diff_kendall": math.nan, "status": "missing",
            "notes": "; ".join(notes)}


def _unmatched(run: FoundRun) -> dict[str, Any]:
    meta = run.meta
    return {"id": "", "family": "", "size": "", "dataset": str(meta.get("settings", {}).get("corpus", "")),
            "paper_model": "", "run": str(run.folder), "run_model": run_label(meta), "proxy": False,
            "spearman": _statistic(run, "spearman"), "paper_spearman": math.nan, "diff_spearman": math.nan,
            "kendall": _statistic(run, "kendall"), "paper_kendall": math.nan, "diff_kendall": math.nan,
            "tolerance": math.nan, "status": "unmatched",
            "notes": "no paper row for this model; pair it with --pair RUN=ROW", "source": ""}


def _row_fields(row: pd.Series, tolerance: float) -> dict[str, Any]:
    return {"id": row["id"], "family": row["family"], "size": row["size"], "dataset": row["dataset"],
            "paper_model": row["model"], "paper_spearman": row["spearman"], "paper_kendall": row["kendall"],
            "tolerance": tolerance, "source": row["source"]}
