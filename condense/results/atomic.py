"""Write a folder or a file so that it appears whole or not at all, and say so in one line when the
storage refuses (full disk, quota, read-only file system, file-size limit)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from condense.errors import CondenseError

__all__ = ["atomic_folder", "atomic_file", "check_writable_target", "storage_errors", "storage_error", "StorageError",
           "STORAGE_ERRNOS"]

RUN_MARKER = "run.json"

# errno -> what the user is told; these are problems of the storage, not of the data being written
STORAGE_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device (ENOSPC); free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded (EDQUOT); free some space in your quota or write elsewhere",
    errno.EROFS: "the file system is read-only (EROFS); write elsewhere",
    errno.EFBIG: "a file exceeds the file-size limit (EFBIG, e.g. `ulimit -f`); raise the limit or write elsewhere",
}


class StorageError(CondenseError):
    """Writing ``target`` failed because the storage refused (one of :data:`STORAGE_ERRNOS`).

    ``target`` is the file or folder the user asked for (never a hidden temporary path) and
    ``errno`` the error number. ``cleaned``: the writer removed what it had written (true of the
    writers of this module), which the message then says.
    """

    def __init__(self, target: str | Path, code: int, cleaned: bool = True) -> None:
        self.target = Path(target)
        self.errno = code
        tail = "; nothing was left half-written" if cleaned else ""
        super().__init__(f"cannot write {str(target)!r}: {STORAGE_ERRNOS[code]}{tail}")


def storage_error(err: BaseException, target: str | Path | None = None) -> StorageError | None:
    """The :class:`StorageError` for ``err`` if it (or an exception it was raised from) is an OSError
    whose errno is in :data:`STORAGE_ERRNOS`; else None.

    ``target`` names the file or folder an atomic writer was writing; without it (a writer of
    unknown tidiness), the OSError's own file name and no claim about leftovers. Chained
    exceptions are searched because libraries wrap the OSError of a failed ``write``.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            if target is None:
                return StorageError(current.filename or "the output", current.errno, cleaned=False)
            return StorageError(target, current.errno)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def storage_errors(target: str | Path, scratch: Path | None = None) -> Iterator[None]:
    """Re-raise a storage failure while writing ``target`` as one :class:`StorageError` line.

    A StorageError of a nested writer naming a path inside ``scratch`` (the temporary folder
    that becomes ``target``) is re-labelled with ``target``; any other exception passes unchanged.
    """
    try:
        yield
    except Exception as err:
        problem = storage_error(err, target)
        if problem is None:
            raise
        if scratch is not None and problem.target.is_relative_to(scratch):
            problem = StorageError(target, problem.errno)
        raise problem from None


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
        raise storage_error(err, out) or CondenseError(
            f"--out {str(out)!r} is not writable ({err.strerror} in {str(ancestor)!r})") from None


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _as_if_created(path: Path, mode: int) -> None:
    """Give a temporary file or folder (created private, 0600/0700) the mode a plain create would
    have, so results on a shared machine are as readable as the user's other files."""
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_folder(out: Path, check: Callable[[Path], None] = check_writable_target) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    ``check(out)`` runs first and raises CondenseError when ``out`` may not be replaced. On any
    failure the temporary folder is removed; a full disk, quota or read-only file system while
    writing becomes one :class:`StorageError` naming ``out``.
    """
    out = Path(out)
    check(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        _as_if_created(tmp, 0o777)
    except OSError as err:
        raise storage_error(err, out) or CondenseError(f"cannot write --out {str(out)!r}: {err.strerror}") from None
    with storage_errors(out, scratch=tmp):
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
def atomic_file(out: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` to write; on success it replaces ``out`` in one rename.

    The folder of ``out`` is created if needed. The file is flushed to the disk (fsync) before the
    rename, so a power cut leaves either the old ``out`` or the complete new one. On any failure the
    temporary file is removed; a full disk, quota or read-only file system becomes one
    :class:`StorageError` naming ``out``.
    Write through Python file objects where a library offers both (``torch.save`` to a path
    reports a full disk without its errno; to a file object it raises the OSError).
    """
    out = Path(out)
    with storage_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial" + out.suffix, dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
            _as_if_created(tmp, 0o666)  # after the writer, which may have replaced the file
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
