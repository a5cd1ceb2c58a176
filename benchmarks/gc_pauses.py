"""The cyclic garbage collector's pauses during one ``condense`` command, by generation.

Runs ``condense ARGS`` in this process through the CLI's entry point, times every collection with
``gc.callbacks`` and prints, per generation, how many ran and the seconds they took, then how many
objects the CLI froze (``gc.get_freeze_count()``). A full (generation 2) collection walks every
tracked object, so one during start-up costs a tenth of a second or more once torch is imported;
``--where`` prints the modules being imported (or the function running) when each full one began.

    python benchmarks/gc_pauses.py probe smollm2-135m --num-seqs 1 --max-length 512 -q --out /tmp/run
    python benchmarks/gc_pauses.py --where probe smollm2-135m --num-seqs 1 -q --out /tmp/run
"""

from __future__ import annotations

import gc
import sys
import time

started: dict[int, float] = {}
count = [0, 0, 0]
seconds = [0.0, 0.0, 0.0]
where = "--where" in sys.argv[1:2]


def _innermost_condense_or_import(frame) -> str:
    """The last few distinct modules on the stack: what was being imported or run."""
    names: list[str] = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "?")
        if not name.startswith(("importlib", "_frozen_importlib")) and (not names or names[-1] != name):
            names.append(name)
        frame = frame.f_back
    return " < ".join(names[:4])


def _record(phase: str, info: dict) -> None:
    generation = info["generation"]
    if phase == "start":
        started[generation] = time.perf_counter()
        if where and generation == 2:
            print(f"full collection in {_innermost_condense_or_import(sys._getframe(1))}", file=sys.stderr)
    else:
        count[generation] += 1
        seconds[generation] += time.perf_counter() - started.pop(generation)


def main() -> None:
    sys.argv = ["condense", *sys.argv[2 if where else 1:]]
    gc.callbacks.append(_record)
    from condense.cli.app import main as condense_main

    try:
        condense_main()
    finally:
        gc.callbacks.remove(_record)
        parts = [f"gen {g}: {count[g]} in {seconds[g]:.3f} s" for g in range(3)]
        print(f"{', '.join(parts)}; total {sum(seconds):.3f} s; frozen {gc.get_freeze_count()}")


if __name__ == "__main__":
    main()
