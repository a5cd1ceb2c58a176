"""Packages whose public names are imported on first use, so that using one corner of condense does
not import all of it: ``condense --help``, ``show``, ``models`` and ``paper table`` import neither
torch nor transformers, and ``import condense`` takes milliseconds.

A package calls :func:`lazy_exports` with ``{module: names}``; each name is imported from its
module the first time it is read (PEP 562 module ``__getattr__``) and then kept. The package lists
the same imports under ``if TYPE_CHECKING:`` for type checkers and documentation tools.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> None:
    """Make ``package``'s attributes ``names`` of each ``module`` in ``exports`` import on first access.

    An exported name that is also the name of one of the package's submodules (the function
    ``condense.training.finetune`` in the module of that name) stays the exported object when the
    submodule is imported, as with an eager ``from .finetune import finetune``.
    """
    where = {name: module for module, names in exports.items() for name in names}

    class LazyPackage(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name not in where:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(where[name]), name)
            setattr(self, name, value)
            return value

        def __dir__(self) -> list[str]:
            return sorted(set(super().__dir__()) | set(where))

        def __setattr__(self, name: str, value: Any) -> None:
            if name in where and isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}":
                return  # the import system binding a submodule over the export of the same name
            super().__setattr__(name, value)

    sys.modules[package].__class__ = LazyPackage
