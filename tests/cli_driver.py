"""Run several ``condense`` command lines in one fresh process, each as the CLI runs it.

``python -m tests.cli_driver COMMANDS.json RESULTS.json``: COMMANDS is a list of argument lists;
each is run through :func:`condense.cli.app.main` (the ``condense`` entry point) with file
descriptors 1 and 2 sent to files of its own, so everything a command prints, whoever prints it
(click, logging, warnings, tqdm), is its own. RESULTS gets, per command, ``rc`` (the exit status),
``seconds``, ``slept`` (the seconds it asked ``time.sleep`` for: a retry's back-off, counted
whatever the machine's load), ``stdout`` and ``stderr``. Before each command the driver asks ``HF_ENDPOINT`` for
``/api/__mark__/<i>``, so a test server's request log can be split by command.

The hub clients read ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when imported: this is how
hub tests run condense in a fresh process with the environment they choose, without paying the
start-up (torch, transformers) once per command.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import urllib.request


def _mark(i: int) -> None:
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint and os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            urllib.request.urlopen(f"{endpoint}/api/__mark__/{i}", timeout=5).close()
        except OSError:  # a 404, or a test endpoint that is down on purpose
            pass


_slept = [0.0]
_real_sleep = time.sleep


def _counted_sleep(seconds: float) -> None:
    _slept[0] += seconds
    _real_sleep(seconds)


time.sleep = _counted_sleep  # before the hub clients are imported, so their back-off is counted too


def run_one(argv: list[str]) -> dict:
    from condense.cli.app import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        # Python-level writers too, where sys.stdout is not fd 1 (e.g. under pytest's capture)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        sys.argv = ["condense", *argv]
        start, _slept[0] = time.perf_counter(), 0.0
        try:
            main()
            rc = 0
        except SystemExit as stop:
            rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except Exception:  # a bug: its traceback is the command's stderr, as in a real process
            traceback.print_exc()
            rc = 1
        seconds = time.perf_counter() - start
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "rc": rc, "seconds": seconds, "slept": _slept[0], "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def main() -> None:
    todo, done = sys.argv[1:3]
    commands = json.loads(open(todo).read())
    results = []
    for i, argv in enumerate(commands):
        _mark(i)
        results.append(run_one([str(a) for a in argv]))
    with open(done, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
