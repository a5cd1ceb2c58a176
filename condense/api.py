"""Python API behind the CLI: probe into a run folder, reuse one already there, save figures."""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.probing.checkpoint import checkpoint_path_for
from condense.probing.probe import ProbeSettings, probe
from condense.results import ProbeResult
from condense.results.atomic import atomic_file, check_writable_target

__all__ = ["probe_to_folder", "rerun", "default_run_folder", "resolve_runs", "save_figure", "check_figure_path"]

_LOAD_KEYS = ("revision", "dtype", "device", "trust_remote_code", "init", "init_seed", "device_map",
              "max_memory", "offload_folder", "quiet", "resume")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def probe_to_folder(model: str, out: str | Path, **options: Any) -> Path:
    """Run :func:`condense.probe` with ``options`` and save the result atomically into ``out``.

    ``out`` is checked before any model loads, so a bad path fails in a second, not after the run.
    """
    out = Path(out)
    check_writable_target(out)
    checkpoint = checkpoint_path_for(out)
    result: ProbeResult = probe(model, checkpoint=checkpoint, **options)
    folder = result.save(out)
    checkpoint.unlink(missing_ok=True)
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


def _same_run(run: dict, model: str, options: dict[str, Any]) -> bool:
    settings = {k: v for k, v in options.items() if k not in _LOAD_KEYS}
    wanted = asdict(ProbeSettings(**settings))
    return (run.get("model") == model and run.get("settings") == wanted
            and run.get("init", "pretrained") == options.get("init", "pretrained")
            and (run.get("init_seed") or 0) == (options.get("init_seed") or 0)
            and run.get("revision") == options.get("revision"))


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
        if (folder / "run.json").exists():
            existing = ProbeResult.load(folder)
            if _same_run(existing.run, item, options):
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

    A full disk, quota or read-only file system raises one-line :class:`StorageError`; no
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
