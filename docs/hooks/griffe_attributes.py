"""griffe extension: attributes in the API reference only where they add something.

- ``self.tokenizer = tokenizer`` in an ``__init__`` (or a dataclass field) makes an attribute that
  the class signature already shows; without a docstring its entry would only repeat the
  assignment, so it is left out. Module constants (``PROBE_COLUMNS = [...]``) stay: their value is
  the information.
- A value longer than a few lines (the ``ALIASES`` table) is not printed: its docstring and the
  guides say what it holds.
"""

from __future__ import annotations

import griffe


LONGEST_VALUE = 400  # characters


class AttributesWorthShowing(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._prune(pkg)

    def _prune(self, obj: griffe.Object) -> None:
        for name, member in list(obj.members.items()):
            if member.is_alias:
                continue
            if member.is_attribute and obj.is_class and member.docstring is None and "instance-attribute" in member.labels:
                del obj.members[name]
            elif member.is_attribute and len(str(member.value or "")) > LONGEST_VALUE:
                member.value = None
            else:
                self._prune(member)
