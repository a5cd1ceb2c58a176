"""Write a folder so that it appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from condense.errors import CondenseError

__all__ = ["atomic_folder", "atomic_file", "check_writable_target"]

RUN_MARKER = "run.json"


def check_writable_target(out: Path) -> None:
    """Fail early, before any compute, when ``out`` cannot become a run folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CondenseError(f"--out {str(out)!r} is an existing file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_MARKER).exists():
        raise CondenseError(f"--out {str(out)!r} is a non-empty folder that is not a condense run; choose a new path")
    ancestor = out.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CondenseError(f"--out {str(out)!r} is not writable: {str(ancestor)!r} is a file, not a folder")
    try:  # a real write: permission bits alone say nothing for root or read-only mounts
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as err:
        raise CondenseError(f"--out {str(out)!r} is not writable ({err.strerror} in {str(ancestor)!r})") from None


@contextlib.contextmanager
def atomic_folder(out: Path, check: Callable[[Path], None] = check_writable_target) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    ``check(out)`` runs first and raises CondenseError when ``out`` may not be replaced.
    """
    out = Path(out)
    check(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        raise CondenseError(f"cannot write --out {str(out)!r}: {err.strerror}") from None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "run")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (same suffix) to write; on success it replaces ``out``
    in one rename, on failure it is removed."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
