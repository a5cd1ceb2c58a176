"""The --layers parser: every spec form, and rejection of malformed or out-of-range specs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from condense.errors import CondenseError
from condense.probing.layers import resolve_layers


@pytest.mark.parametrize(
    "spec, expected",
    [("all", list(range(13))), ("last", [12]), ("half", list(range(6, 13))), ("0,6,12", [0, 6, 12]),
     ("-1", [12]), ("0:12:2", [0, 2, 4, 6, 8, 10]), ("::4", [0, 4, 8, 12]), ("-3:", [10, 11, 12]),
     (" 6 , 0 ,6", [0, 6])],
)
def test_spec_forms(spec, expected):
    assert resolve_layers(spec, 13) == expected


@pytest.mark.parametrize("spec", ["13", "-14", "0,99", "abc", "1:2:0", "1;2", "", "5:2", "1.5"])
def test_bad_specs_name_the_spec(spec):
    with pytest.raises(CondenseError, match="bad --layers"):
        resolve_layers(spec, 13)


@given(st.integers(1, 80), st.lists(st.integers(-200, 200), min_size=1, max_size=6))
def test_lists_in_range_resolve_sorted_or_fail_cleanly(n, items):
    spec = ",".join(map(str, items))
    if all(-n <= i < n for i in items):
        out = resolve_layers(spec, n)
        assert out == sorted({i % n for i in items})
    else:
        with pytest.raises(CondenseError, match="out of range"):
            resolve_layers(spec, n)


@given(st.integers(1, 60), st.one_of(st.none(), st.integers(-70, 70)), st.one_of(st.none(), st.integers(-70, 70)),
       st.one_of(st.none(), st.integers(-5, 5).filter(lambda s: s != 0)))
def test_slices_match_python(n, a, b, c):
    spec = f"{'' if a is None else a}:{'' if b is None else b}" + ("" if c is None else f":{c}")
    expected = sorted(set(list(range(n))[slice(a, b, c)]))
    if expected:
        assert resolve_layers(spec, n) == expected
    else:
        with pytest.raises(CondenseError):
            resolve_layers(spec, n)
