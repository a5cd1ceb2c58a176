"""griffe extension: condense's docstring idioms, written for ``help()``, as Markdown for the site.

- **Field lines**: a class docstring describes its fields one per line (``layers: one row per
  layer ...``, ``size / sha256: ...``). A line that starts with names of the class's own members
  and a colon becomes an item of a list, so the fields do not run together into one paragraph.
- **Literal blocks**: ``run::`` before an indented block reads ``run:`` (the block itself is
  already a Markdown code block).
- **Sphinx roles**: ``:func:`finetune```, ``:class:`condense.ProbeSettings``` or ``:mod:`.resume```
  become mkdocstrings cross-references (``:func:`finetune``` in ``condense.training`` links to
  ``condense.training.finetune.finetune``), the target resolved as Python resolves names: relative
  to the object's module and its enclosing scopes, then as an absolute path. A role links where the
  reference renders its target and is plain code where it does not (a private helper); a role whose
  target does not exist at all (renamed, removed) is logged as a warning, which fails the strict
  build.
"""

from __future__ import annotations

import logging
import re

import griffe

_FIELD = re.compile(r"^((?:``)?\w+(?:``)?(?:\s*[,/]\s*(?:``)?\w+(?:``)?)*)\s*:\s+\S")
_NAME = re.compile(r"\w+")
_LITERAL = re.compile(r"(\S)::$", re.M)
_ROLE = re.compile(r":(func|class|meth|mod|attr|data|exc|obj):`(~?)([.\w]+)`")
logger = logging.getLogger("mkdocs.plugins.condense_docstrings")


def _resolve(obj: griffe.Object, role: str, target: str, modules: griffe.ModulesCollection) -> str | None:
    """The full path of ``target`` as seen from ``obj``, or None."""
    if target.startswith("."):  # relative to the package of obj's module
        package = obj.module.path if obj.module.is_init_module else obj.module.path.rpartition(".")[0]
        candidates = [package + target]
    else:
        candidates = [f"{scope.path}.{target}" for scope in _scopes(obj)] + [target]
    for candidate in candidates:
        found = _lookup(candidate, modules)
        if found is None:
            continue
        if role != "mod" and found.is_module and found.name in found.members:
            return f"{candidate}.{found.name}"  # a function named like its module (training.finetune)
        return candidate
    return None


def _scopes(obj: griffe.Object):
    while obj is not None:
        yield obj
        obj = obj.parent


def _lookup(path: str, modules: griffe.ModulesCollection) -> griffe.Object | None:
    head, _, rest = path.partition(".")
    if head not in modules.members:
        return None
    try:
        found = modules[head][rest] if rest else modules[head]
        return found.final_target if found.is_alias else found
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _fields_as_list(cls: griffe.Class) -> str:
    """The class docstring with each line that describes its own members made a list item."""
    lines, out, in_list = cls.docstring.value.splitlines(), [], False
    for line in lines:
        match = _FIELD.match(line)
        if match and all(name in cls.all_members for name in _NAME.findall(match.group(1).replace("``", ""))):
            if not in_list and out and out[-1].strip():
                out.append("")  # a list needs a blank line before it
            names = re.sub(r"(?<!`)\b(\w+)\b(?!`)", r"`\1`", match.group(1).replace("``", "`"))
            out.append(f"- {names}{line[match.end(1):]}")
            in_list = True
        else:
            in_list = in_list and bool(line.strip())
            out.append(("  " + line) if in_list else line)  # a continuation line stays in its item
    return "\n".join(out)


class CondenseDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self._walk(pkg, loader.modules_collection)

    def _walk(self, obj: griffe.Object, modules: griffe.ModulesCollection) -> None:
        if obj.docstring is not None:
            text = _fields_as_list(obj) if obj.is_class else obj.docstring.value
            text = _LITERAL.sub(r"\1:", text)
            obj.docstring.value = _ROLE.sub(lambda m: self._link(obj, m, modules), text)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, modules)

    def _link(self, obj: griffe.Object, match: re.Match, modules: griffe.ModulesCollection) -> str:
        role, short, target = match.groups()
        path = _resolve(obj, role, target, modules)
        shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if path is None:
            logger.warning("%s: cannot resolve %s in its docstring", obj.path, match.group(0))
            return f"`{shown}`"
        # optional: a link where the reference renders the target, plain code where it does not
        # (a private helper); a name that no longer exists was caught above
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

