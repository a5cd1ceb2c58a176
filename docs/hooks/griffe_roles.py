"""griffe extension: the Sphinx roles of condense's docstrings as links of the API reference.

The docstrings say ``:func:`finetune```, ``:class:`condense.ProbeSettings``` or ``:mod:`.resume```,
which ``help()`` shows as they are. For the site each becomes a mkdocstrings cross-reference
to ``condense.training.finetune.finetune``), the target resolved like Python names are: relative
to the object's module and the enclosing scopes, then as an absolute path. It links where the
reference renders its target, and is plain code where it does not (a private helper). A role whose
target cannot be resolved at all (renamed, removed) is logged as a warning: the strict build fails.
"""

from __future__ import annotations

import logging
import re

import griffe

_ROLE = re.compile(r":(func|class|meth|mod|attr|data|exc|obj):`(~?)([.\w]+)`")
logger = logging.getLogger("mkdocs.plugins.griffe_roles")


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


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self._walk(pkg, loader.modules_collection)

    def _walk(self, obj: griffe.Object, modules: griffe.ModulesCollection) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(lambda m: self._link(obj, m, modules), obj.docstring.value)
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

