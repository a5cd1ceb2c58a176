"""Parse a ``--layers`` spec against a model's hidden-state entries (0 = embedding output)."""

from __future__ import annotations

import re

from condense.errors import CondenseError

__all__ = ["resolve_layers", "LAYER_SPEC_HELP"]

LAYER_SPEC_HELP = (
    "all | last | half | a comma list such as 0,6,12 (negative counts from the end, -1 = last) "
    "| a slice start:stop[:step] such as 0:12:2"
)
_INT = r"-?\d+"


def resolve_layers(spec: str, n_entries: int) -> list[int]:
    """Sorted, de-duplicated hidden-state indices in ``[0, n_entries)`` selected by ``spec``.

    ``n_entries`` = number of Transformer blocks + 1 (index 0 is the embedding output).
    ``all``: every entry; ``last``: the final entry; ``half``: the later half of the entries
    (indices >= n_entries // 2); ``0,6,-1``: listed indices; ``a:b:c``: a Python slice.
    Raises CondenseError naming the bad spec and the valid range.
    """
    text = str(spec).strip().lower()
    valid = f"valid indices are 0..{n_entries - 1} (or -{n_entries}..-1)"
    if text == "all":
        return list(range(n_entries))
    if text == "last":
        return [n_entries - 1]
    if text == "half":
        return list(range(n_entries // 2, n_entries))
    if re.fullmatch(rf"({_INT})?:({_INT})?(:({_INT})?)?", text):
        parts = [int(p) if p else None for p in text.split(":")]
        if len(parts) == 3 and parts[2] == 0:
            raise CondenseError(f"bad --layers {spec!r}: slice step cannot be 0")
        chosen = list(range(n_entries))[slice(*parts)]
        if not chosen:
            raise CondenseError(f"bad --layers {spec!r}: the slice selects no layer; {valid}")
        return sorted(set(chosen))
    if re.fullmatch(rf"{_INT}(\s*,\s*{_INT})*", text):
        out = set()
        for item in text.split(","):
            i = int(item)
            if not -n_entries <= i < n_entries:
                raise CondenseError(f"bad --layers {spec!r}: layer {i} is out of range; {valid}")
            out.add(i % n_entries)
        return sorted(out)
    raise CondenseError(f"bad --layers {spec!r}: expected {LAYER_SPEC_HELP}")
