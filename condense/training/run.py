"""A finetune output folder: its layout, written atomically, and read back (``load_finetune``).

Layout: ``checkpoint/`` (model + tokenizer), ``loss_log.csv``, ``probes/step_NNNNNN/`` (probe run
folders), ``probes.csv``, ``steps.png``, ``finetune.json`` (the marker), and ``compare.png`` when
a baseline was given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from condense.errors import CondenseError
from condense.results import ProbeResult
from condense.results.atomic import atomic_folder, check_writable_target

__all__ = ["MARKER", "FinetuneRun", "load_finetune", "check_finetune_folder", "check_out", "atomic_output",
           "probe_folder"]

MARKER = "finetune.json"
FINETUNE_FORMAT = 1


def probe_folder(root: Path, step: int) -> Path:
    """Where the probe of ``step`` lives inside a finetune folder."""
    return Path(root) / "probes" / f"step_{step:06d}"


@dataclass
class FinetuneRun:
    """One finetune run.

    folder: where it is saved. manifest: finetune.json (settings, data, timings, versions).
    loss_log: one row per optimizer step (step, lm_loss, dispersion_loss, total_loss, lr).
    probes: one row per probe step (step, heldout_lm_loss, mean_cos_last_half, mean_cos_last,
        spearman, kendall). results: {step: ProbeResult} of the held-out probes.
    """

    folder: Path
    manifest: dict[str, Any]
    loss_log: pd.DataFrame
    probes: pd.DataFrame
    results: dict[int, ProbeResult] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short plot label: model, init, and the regulariser with its weight and blocks."""
        s = self.manifest["settings"]
        model = str(self.manifest["model"]).rstrip("/").split("/")[-1]
        init = ", random init" if s["init"] == "random" else ""
        if s["dispersion"] == "none":
            return f"{model}{init}: no dispersion"
        return f"{model}{init}: {s['dispersion']} (coeff {s['coeff']:g}, blocks {s['where']})"


def check_finetune_folder(folder: str | Path) -> Path:
    """``folder`` as a Path if it holds a finetune run, else CondenseError (cheap: no files read)."""
    folder = Path(folder)
    needed = [MARKER, "loss_log.csv", "probes.csv", "probes"]
    missing = [n for n in needed if not (folder / n).exists()]
    if not folder.is_dir() or missing:
        what = f"missing {', '.join(missing)}" if folder.is_dir() else "no such folder"
        raise CondenseError(f"{str(folder)!r} is not a finetune folder ({what}); "
                            "give an --out folder written by `condense finetune`")
    return folder


def load_finetune(folder: str | Path) -> FinetuneRun:
    """Read a finetune folder back, probe run folders included; CondenseError if it is not one."""
    folder = check_finetune_folder(folder)
    try:
        manifest = json.loads((folder / MARKER).read_text())
        loss_log = pd.read_csv(folder / "loss_log.csv")
        probes = pd.read_csv(folder / "probes.csv")
    except (ValueError, OSError) as err:
        raise CondenseError(
            f"finetune folder {str(folder)!r} has a corrupt file ({type(err).__name__}: {err})") from None
    if manifest.get("format") != FINETUNE_FORMAT:
        raise CondenseError(f"finetune folder {str(folder)!r} has format {manifest.get('format')!r}; "
                            f"this condense reads format {FINETUNE_FORMAT}")
    results = {int(step): ProbeResult.load(probe_folder(folder, int(step))) for step in probes["step"]}
    return FinetuneRun(folder, manifest, loss_log, probes, results)


def check_out(out: Path) -> None:
    """Fail before any compute when ``out`` cannot become a finetune folder.

    A previous finetune folder is replaced (like a probe run folder); any other non-empty
    folder or an existing file is refused.
    """
    out = Path(out)
    if out.is_dir() and (out / MARKER).exists():
        if not os.access(out.resolve().parent, os.W_OK | os.X_OK):
            raise CondenseError(f"--out {str(out)!r} is not writable (no write permission in its parent)")
        return
    check_writable_target(out)
    if out.is_dir() and any(out.iterdir()):  # a probe run folder is not a finetune folder
        raise CondenseError(f"--out {str(out)!r} is a non-empty folder that is not a finetune run; choose a new path")


def atomic_output(out: Path):
    """A temporary folder beside ``out`` that replaces it in one rename on success."""
    return atomic_folder(Path(out), check=check_out)
