"""The cyclic garbage collector waits out imports and model loads (condense.collector), and a CLI
process freezes its start-up objects; a library caller's collector is left as it was."""

from __future__ import annotations

import gc
import sys

import pytest

import condense.models.loading
from condense.collector import collector_paused
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


def test_freeze_moves_what_exists_out_of_later_collections():
    def walked(items) -> int:  # how many of items a collection walks (frozen ones are in none)
        seen = {id(o) for o in gc.get_objects()}
        return sum(id(item) in seen for item in items)

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
