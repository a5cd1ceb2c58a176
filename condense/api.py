"""Python API behind the CLI: probe into a run folder, reuse one already there, save figures."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.probing.checkpoint import DEFAULT_CHECKPOINT_EVERY, CheckpointPlan, checkpoint_path_for
from condense.probing.probe import ProbeSettings, probe
from condense.results import ProbeResult
from condense.results.atomic import atomic_file, check_writable_target

__all__ = ["probe_to_folder", "rerun", "default_run_folder", "same_run", "existing_run", "resolve_runs", "save_figure",
           "check_figure_path"]

_SETTING_FIELDS = frozenset(f.name for f in fields(ProbeSettings))
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def probe_to_folder(model: str, out: str | Path, checkpoint_every: float | None = DEFAULT_CHECKPOINT_EVERY,
                    **options: Any) -> Path:
    """Run :func:`condense.probe` with ``options`` and save the result atomically into ``out``.

    ``out`` is checked before any model loads, so a bad path fails in a second, not after the run.
    The accumulators are checkpointed beside ``out`` every ``checkpoint_every`` seconds (0 or None:
    only on SIGINT/SIGTERM), so ``resume=True`` can continue after a hard kill.
    """
    out = Path(out)
    check_writable_target(out)
    checkpoint = CheckpointPlan(checkpoint_path_for(out), checkpoint_every)
    result: ProbeResult = probe(model, checkpoint=checkpoint, **options)
    folder = result.save(out)
    checkpoint.path.unlink(missing_ok=True)
    return folder


def rerun(folder: str | Path, out: str | Path | None = None, quiet: bool = True) -> Path:
    """Repeat the run recorded in ``folder``/run.json (same model, load options and settings)."""
    run = ProbeResult.load(folder).run
    if "load_options" not in run:
        raise CondenseError(f"run folder {str(folder)!r} does not record its load options; probe it again by hand")
    return probe_to_folder(run["model"], out or folder, quiet=quiet, **run["load_options"], **run["settings"])


def default_run_folder(model: str, corpus: str = "builtin", init: str = "pretrained", root: str | Path = "results") -> Path:
    """``<root>/<model>[-random]__<corpus>`` with path-unsafe characters replaced."""

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name if os.path.exists(text) else text).strip("-")

    return Path(root) / f"{slug(model)}{'-random' if init == 'random' else ''}__{slug(corpus)}"


def same_run(run: Mapping[str, Any], model: str, **options: Any) -> bool:
    """Whether the manifest ``run`` (a run.json) records a probe of ``model`` with ``options``.

    ``options`` are keyword arguments of :func:`condense.probe`. Compared, because they change
    the numbers: the model as given; every :class:`ProbeSettings` field (defaults filled in, so
    an omitted option equals its default); ``revision``; ``init``; ``init_seed`` only with
    ``init="random"`` (pretrained weights ignore it); ``dtype`` only when given explicitly
    (``"auto"`` accepts whatever dtype was chosen). Not compared: device, placement
    (``device_map``, ``max_memory``, ``offload_folder``), ``trust_remote_code`` and progress
    options. A run of a model object held in memory (``source: memory``) never matches: its weights
    may have changed since. The one rule for reusing a run folder: ``condense compare``/``family``
    and sweeps.
    """
    wanted = asdict(ProbeSettings(**{k: v for k, v in options.items() if k in _SETTING_FIELDS}))
    recorded = run.get("settings") or {}
    init = options.get("init", "pretrained")
    dtype = options.get("dtype", "auto")
    return (run.get("source") != "memory"
            and run.get("model") == model
            and all(recorded.get(k) == v for k, v in wanted.items())
            and run.get("revision") == options.get("revision")
            and run.get("init", "pretrained") == init
            and run.get("init_seed") == (options.get("init_seed", 0) if init == "random" else None)
            and (dtype == "auto" or run.get("dtype") == dtype))


def existing_run(folder: str | Path, model: str, **options: Any) -> ProbeResult | None:
    """The complete run in ``folder`` if it was made by ``model`` with ``options`` (:func:`same_run`).

    None when ``folder`` holds no run.json, cannot be read as a run (half-written by hand, an
    older result format) or records other settings: then it should be probed again.
    """
    if not (Path(folder) / "run.json").exists():
        return None
    try:
        result = ProbeResult.load(folder)
    except CondenseError:
        return None
    return result if same_run(result.run, model, **options) else None


def resolve_runs(items: list[str], runs_dir: str | Path = "results", **options: Any) -> list[ProbeResult]:
    """Each item is a run folder (loaded) or a model (probed with ``options`` into
    ``runs_dir``, reusing the folder there when it already holds a run with the same settings)."""
    results = []
    for item in items:
        path = Path(item)
        if path.is_dir() and (path / "run.json").exists():
            results.append(ProbeResult.load(path))
            continue
        folder = default_run_folder(item, options.get("corpus", "builtin"), options.get("init", "pretrained"), runs_dir)
        existing = existing_run(folder, item, **options)
        if existing is not None:
            results.append(existing)
            continue
        probe_to_folder(item, folder, **options)
        results.append(ProbeResult.load(folder))
    return results


def check_figure_path(out: str | Path) -> Path:
    """Reject a figure path whose suffix matplotlib should not guess, before any work."""
    out = Path(out)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise CondenseError(f"bad --out {str(out)!r}: the figure file must end in {', '.join(FIGURE_SUFFIXES)}")
    if out.is_dir():
        raise CondenseError(f"bad --out {str(out)!r}: it is a folder; give a file name such as fig.png")
    return out


def save_figure(fig, out: str | Path, dpi: int = 200) -> Path:
    """Save ``fig`` to ``out`` (format from the suffix) via a temporary file and a rename.

    A full disk, quota or read-only file system raises one-line :class:`~condense.results.atomic.StorageError`; no
    partial file is left.
    """
    import matplotlib.pyplot as plt

    out = check_figure_path(out)
    try:
        with atomic_file(out) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=out.suffix.lstrip(".").lower())
    finally:
        plt.close(fig)
    return out
