"""Run ``condense`` in this process with a pause the test controls, so no interruption test races the run.

``python -m tests.paced MARKER WHEN -- ARGV...`` runs ``condense ARGV...`` through the CLI entry point,
with one pause planted; on reaching it the run writes the file MARKER (the parent's event) and then
waits:

- ``read:K``: before the K-th forward pass (``HiddenStateReader.read``), until SIGINT/SIGTERM has
  been turned into a stop request by condense's own handler; the run then stops at that batch's end.
- ``probe-save``: after the first periodic probe checkpoint is written, for a SIGKILL (the run
  never goes on by itself).
- ``train-save:S``: after the first finetune checkpoint of a step beyond S is written, for a SIGKILL.
- ``train-stop:S``: after the first finetune checkpoint of a step beyond S is written, until
  SIGINT/SIGTERM has been turned into a stop request; the run then saves at the next step and stops.

Without the pause, a loaded machine decides whether the signal lands before the run ends. Every wait
gives up after WAIT seconds (the parent's own timeouts then fail the test instead of hanging it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

__all__ = ["WAIT", "paced_argv", "wait_for_marker"]

WAIT = 300.0  # seconds a paused child waits for its signal before giving up


def paced_argv(marker: Path, when: str, argv: list) -> list[str]:
    """The command line that runs ``condense *argv`` with the pause ``when`` announcing itself at ``marker``."""
    return [sys.executable, "-m", "tests.paced", str(marker), when, "--", *map(str, argv)]


def wait_for_marker(proc, marker: Path, timeout: float = 240) -> None:
    """Return once the child has reached its pause (written ``marker``); fail if it ended or hung first."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, "the run ended before its pause"
        assert time.monotonic() < deadline, "the run did not reach its pause"
        time.sleep(0.01)  # polling only: the child waits at its pause, however late this notices


def _until(condition) -> None:
    deadline = time.monotonic() + WAIT
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def _plant(marker: Path, when: str) -> None:
    from condense.probing import checkpoint, probe
    from condense.probing.extract import HiddenStateReader
    from condense.training import resume

    requests: list = []
    real_init = checkpoint.StopRequest.__init__

    def recorded(self) -> None:
        real_init(self)
        requests.append(self)

    checkpoint.StopRequest.__init__ = recorded
    stopping = lambda: any(r.signal_name for r in requests)  # noqa: E731
    kind, _, arg = when.partition(":")
    if kind == "read":
        real_read, reads = HiddenStateReader.read, []

        def read(self, *args, **kwargs):
            reads.append(1)
            if len(reads) == int(arg):
                marker.write_text(when)
                _until(stopping)
            return real_read(self, *args, **kwargs)

        HiddenStateReader.read = read
    elif kind == "probe-save":
        real_save = probe.save_checkpoint

        def save(*args, **kwargs):
            real_save(*args, **kwargs)
            marker.write_text(when)
            _until(lambda: False)

        probe.save_checkpoint = save
    elif kind in ("train-save", "train-stop"):
        real_save = resume.Checkpointer.save

        def save(self, state):
            real_save(self, state)
            if state["step"] > int(arg) and not marker.exists():
                marker.write_text(when)
                _until(stopping if kind == "train-stop" else lambda: False)

        resume.Checkpointer.save = save
    else:
        raise SystemExit(f"tests.paced: unknown pause {when!r}")


def main() -> None:
    marker, when, dashes, *argv = sys.argv[1:]
    assert dashes == "--", sys.argv
    _plant(Path(marker), when)
    from condense.cli.app import main as condense_main

    sys.argv = ["condense", *argv]
    condense_main()


if __name__ == "__main__":
    main()
