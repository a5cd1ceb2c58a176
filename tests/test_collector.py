"""The cyclic garbage collector waits out imports and model loads (condense.collector), and a CLI
process freezes its start-up objects; a library caller's collector is left as it was."""

from __future__ import annotations

import gc
import sys

import pytest

import condense.models.loading
from condense.cli import main
from condense.collector import collector_paused, frozen_for_exit
from condense.models import load_model

LOADING = condense.models.loading.__file__


@pytest.fixture
def collections():
    """Each collection that starts while the test runs, as (generation, whether a frame of
    condense.models.loading is on the stack), with a threshold of 1 so that any allocation
    triggers one where the collector is enabled."""
    seen: list[tuple[int, bool]] = []

    def record(phase, info):
        if phase == "start":
            frame, in_loading = sys._getframe(1), False
            while frame is not None and not in_loading:
                in_loading, frame = frame.f_code.co_filename == LOADING, frame.f_back
            seen.append((info["generation"], in_loading))

    thresholds = gc.get_threshold()
    gc.set_threshold(1, 10, 10)
    gc.callbacks.append(record)
    yield seen
    gc.callbacks.remove(record)
    gc.set_threshold(*thresholds)


def allocate() -> list:
    return [[i] for i in range(2000)]  # tracked containers: each counts towards a collection


def test_no_automatic_collection_inside_and_the_state_comes_back(collections):
    assert gc.isenabled()
    with collector_paused():
        collections.clear()
        assert not gc.isenabled()
        allocate()
        assert collections == []
        gc.collect()  # explicit collections still run
        assert collections == [(2, False)]
    assert gc.isenabled()
    allocate()
    assert (0, False) in collections  # back to automatic


def test_the_state_comes_back_after_an_error_and_a_nested_block_leaves_it_paused():
    with pytest.raises(ValueError):
        with collector_paused():
            with collector_paused():
                pass
            assert not gc.isenabled()
            raise ValueError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller who had it off keeps it off
    finally:
        gc.enable()


def walked(items) -> int:
    """How many of ``items`` a collection walks (frozen ones are in no generation)."""
    seen = {id(o) for o in gc.get_objects()}
    return sum(id(item) in seen for item in items)


def test_freeze_moves_what_exists_out_of_later_collections():
    assert gc.get_freeze_count() == 0
    try:
        with collector_paused():
            kept = allocate()
        assert gc.get_freeze_count() == 0 and walked(kept) == len(kept)
        with collector_paused(freeze=True):
            kept = allocate()
        assert gc.get_freeze_count() > len(kept) and walked(kept) == 0
    finally:
        gc.unfreeze()


def test_a_model_load_triggers_no_automatic_collection(tiny_gpt2, collections):
    load_model.__wrapped__(str(tiny_gpt2))  # the same load without the pause: the test can tell
    assert (0, True) in collections
    collections.clear()
    loaded = load_model(str(tiny_gpt2))
    assert loaded.model is not None and gc.isenabled()
    assert [generation for generation, in_loading in collections if in_loading] == []
    assert gc.get_freeze_count() == 0  # a library call never freezes its caller's objects


def test_frozen_for_exit_freezes_what_exists_also_when_the_block_exits_the_process():
    try:
        with pytest.raises(SystemExit):
            with frozen_for_exit():
                kept = allocate()
                assert walked(kept) == len(kept)
                sys.exit(2)
        assert walked(kept) == 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("argv, code", [(["models"], None), (["show", "/nonexistent/run"], 2)])
def test_main_leaves_nothing_for_the_exit_collections_to_walk(argv, code, monkeypatch, capsys):
    """Whether the command succeeds or exits 2, what exists when main() returns is frozen: the
    interpreter's exit then walks nothing (0.6 s of a one-sequence probe's wall time)."""
    monkeypatch.setattr(sys, "argv", ["condense", *argv])
    kept = allocate()
    if code is None:
        main()
    else:
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == code
    capsys.readouterr()
    assert walked(kept) == 0
