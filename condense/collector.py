"""Keep Python's cyclic garbage collector out of start-up.

Importing torch, transformers and matplotlib creates some 300 000 long-lived objects, and a
model load as many again. Every full collection walks all of them, and the allocation counter
triggers several during those imports: over a second of a short probe's start-up here (see
``benchmarks/gc_pauses.py``). Nothing made then is garbage worth a walk, so the collector waits
until the imports or the load are over; a process that owns its lifetime (the CLI) also moves
what exists by then out of the collector's sight for good (``gc.freeze``), so that the
collections the probe itself triggers walk only what the probe makes. At its end the CLI freezes
again: the interpreter's exit runs full collections over everything not frozen, 0.6 s of a
one-sequence probe of SmolLM2-135M (the model, the modules the load imported, the results).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused", "frozen_for_exit"]


@contextlib.contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """No automatic collection inside the block; usable as a decorator (``@collector_paused()``).

    freeze: on leaving, move every object tracked so far to the permanent generation, which no
        later collection walks. Only for a process whose objects made so far live until it ends
        (the CLI); a library function never freezes its caller's objects.

    The collector's previous state is restored on leaving, also on error; a block nested in
    another leaves it paused. An explicit ``gc.collect()`` inside still runs.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def frozen_for_exit() -> Iterator[None]:
    """On leaving the block (also on error or ``sys.exit``), freeze every tracked object, so that the
    collections of the interpreter's exit walk nothing. Only for the outermost frame of a process
    about to end (the CLI's ``main``): cyclic garbage made until then is left to the operating system,
    and its finalizers do not run (nothing of condense's relies on them: every file is closed and
    renamed into place before a command returns).
    """
    try:
        yield
    finally:
        gc.freeze()
