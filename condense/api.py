"""Python API behind the CLI: probe into a run folder, or reuse one already there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condense.probing.probe import probe
from condense.results import ProbeResult
from condense.results.atomic import check_writable_target

__all__ = ["probe_to_folder"]


def probe_to_folder(model: str, out: str | Path, **options: Any) -> Path:
    """Run :func:`condense.probe` with ``options`` and save the result atomically into ``out``.

    ``out`` is checked before any model loads, so a bad path fails in a second, not after the run.
    """
    out = Path(out)
    check_writable_target(out)
    result: ProbeResult = probe(model, **options)
    return result.save(out)
