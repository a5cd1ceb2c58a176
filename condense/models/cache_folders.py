"""The condense cache, and folders in it that are built once, atomically, by one process at a time.

A folder is built in ``.<name>.partial-*`` beside its final place and renamed into place only when
whole, so a folder under the final name is always complete; a killed builder leaves only the
partial folder, which the next build removes. A file lock (``filelock``, the lock the Hugging Face
hub client uses for its own cache) makes a second process wait for the first and then find its
result instead of building the same thing again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from condense.errors import CondenseError

__all__ = ["CACHE_ENV", "BASELINES_FOLDER", "cache_dir", "build_once", "folder_bytes", "remove_folder"]

CACHE_ENV = "CONDENSE_CACHE"
BASELINES_FOLDER = "baselines"  # the probes' Gaussian baselines (condense.probing.baselines)


def cache_dir() -> Path:
    """``$CONDENSE_CACHE``, or ``~/.cache/condense`` when unset."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "condense").expanduser()


def build_once(final: Path, build: Callable[[Path], None], is_complete: Callable[[], bool], what: str,
               before: Callable[[], None] | None = None) -> bool:
    """Build the folder ``final`` with ``build(tmp)`` unless ``is_complete()``; True when this call built it.

    ``before`` runs under the lock before building (a disk-space check). ``what`` names the work in
    errors ("assemble 'x'"): an OSError while building is one CondenseError line, nothing left behind.
    """
    from filelock import FileLock

    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(parent / f".{final.name}.lock"))
        lock.acquire()
    except OSError as err:
        raise CondenseError(f"cannot write the model cache {str(parent)!r} ({err.strerror}); "
                            f"set {CACHE_ENV} to a writable folder") from None
    try:
        if is_complete():  # another process finished it while this one waited
            return False
        for stale in parent.glob(f".{final.name}.partial-*"):  # left by a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        if before is not None:
            before()
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp's 0700 (and a writer's 0600) would hide a shared cache from other users
            for file in tmp.rglob("*"):
                file.chmod(0o755 if file.is_dir() else 0o644)
            if final.exists():  # an incomplete folder from an older layout or a damaged cache
                remove_folder(final)
            os.replace(tmp, final)
        except OSError as err:
            raise CondenseError(f"cannot {what} in {str(parent)!r} ({err.strerror}); "
                                f"free space there or set {CACHE_ENV} to another folder") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return True


def remove_folder(folder: Path) -> None:
    """Remove ``folder``: renamed aside first, so no half-removed folder stays under its name."""
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.replace(folder, old / "x")
    shutil.rmtree(old, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist); hard links and symlinks counted once."""
    seen, total = set(), 0
    for root, _, files in os.walk(folder):
        for name in files:
            stat = os.lstat(os.path.join(root, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total
