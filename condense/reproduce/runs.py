"""Finished runs named on the command line: run folders, sweep folders and folders of run folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from condense.errors import CondenseError
from condense.results import ProbeResult

__all__ = ["FoundRun", "FailedRun", "collect_runs", "canonical_model", "run_hub_id", "run_label"]

# hub organisations whose models are also reachable by their bare legacy name (gpt2 = openai-community/gpt2)
LEGACY_ORGS = frozenset({"openai-community", "google-bert", "google-t5", "distilbert", "facebookai"})


@dataclass(frozen=True)
class FoundRun:
    """A complete run folder and its contents."""

    folder: Path
    result: ProbeResult = field(compare=False, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        return self.result.run


@dataclass(frozen=True)
class FailedRun:
    """A run a sweep's summary.csv lists as failed (so a paper row may be missing because of it)."""

    model: str
    corpus: str
    error: str


def collect_runs(paths: list[str | Path]) -> tuple[list[FoundRun], list[FailedRun]]:
    """The runs under ``paths``, each given once, in the order given.

    Each path is a run folder (holds run.json), or a folder of runs: a sweep folder (its summary.csv
    lists run folders, possibly elsewhere, and failed runs) and/or run folders one level below it.
    CondenseError (one line) for a path that is none of these, or a summary.csv that is malformed
    or names a run folder that no longer exists.
    """
    found: dict[Path, FoundRun] = {}
    failed: list[FailedRun] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise CondenseError(f"{str(path)!r} does not exist; give a run folder, a sweep folder or a folder of run folders")
        if not path.is_dir():
            raise CondenseError(f"{str(path)!r} is a file; give a run folder, a sweep folder or a folder of run folders")
        if (path / "run.json").exists():
            folders = [path]
        else:
            listed, failures = _summary_entries(path)
            failed += failures
            below = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")
                           and (d / "run.json").exists())
            folders = listed + [d for d in below if d.resolve() not in {f.resolve() for f in listed}]
            if not folders and not failures:
                raise CondenseError(f"{str(path)!r} is not a condense run folder (no run.json), nor a sweep folder "
                                    "(summary.csv) or a folder of run folders")
        for folder in folders:
            key = folder.resolve()
            if key not in found:
                found[key] = FoundRun(folder, ProbeResult.load(folder))
    return list(found.values()), failed


def _summary_entries(sweep: Path) -> tuple[list[Path], list[FailedRun]]:
    """Run folders and failed runs listed by ``sweep/summary.csv`` (none when there is no summary)."""
    summary = sweep / "summary.csv"
    if not summary.exists():
        return [], []
    try:
        frame = pd.read_csv(summary, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as err:
        raise CondenseError(f"cannot read {str(summary)!r} ({type(err).__name__}); re-run the sweep to rewrite it") from None
    lacking = [c for c in ("model", "corpus", "status", "error", "folder") if c not in frame.columns]
    if lacking:
        raise CondenseError(f"{str(summary)!r} is not a sweep summary (no column {lacking[0]}); re-run the sweep")
    folders, failed = [], []
    for row in frame.itertuples():
        if row.status == "failed":
            failed.append(FailedRun(row.model, row.corpus, row.error))
            continue
        listed = Path(row.folder)
        # a sweep folder that was moved or copied still finds its runs by name
        folder = listed if (listed / "run.json").exists() else sweep / listed.name
        if not (folder / "run.json").exists():
            raise CondenseError(f"{str(summary)!r} lists run folder {row.folder!r}, which holds no run "
                                f"(neither there nor in {str(sweep)!r}); re-run the sweep")
        folders.append(folder)
    return folders, failed


def canonical_model(hub_id: str | None) -> str:
    """Lower-case hub id with legacy organisations dropped (``openai-community/gpt2`` -> ``gpt2``); '' for none."""
    text = (hub_id or "").strip().lower()
    org, _, name = text.rpartition("/")
    return name if org in LEGACY_ORGS else text


def run_hub_id(meta: dict[str, Any]) -> str:
    """The hub id a run's model came from ('' for a local checkpoint folder or file)."""
    hub = meta.get("hub_id")
    if hub:
        return str(hub)
    model = str(meta.get("model", ""))
    return "" if not model or os.path.isabs(model) or model.startswith(".") or os.path.exists(model) else model


def run_label(meta: dict[str, Any]) -> str:
    """A short name for a run's model: the hub id, or the file or folder name of a local checkpoint."""
    model = str(meta.get("model", "?"))
    return model if run_hub_id(meta) == model else Path(model.rstrip("/")).name
