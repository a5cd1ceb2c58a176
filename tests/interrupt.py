"""Send a signal to a running `condense` command once it has paused before a forward pass."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.paced import paced_argv, wait_for_marker
from tests.test_cli import ENV

__all__ = ["interrupt_when_probing"]


def interrupt_when_probing(argv: list, sig, before_read: int = 2) -> subprocess.CompletedProcess:
    """Start `condense *argv`, send ``sig`` while it waits before its ``before_read``-th forward pass
    (``tests.paced``), wait for the exit: the signal always lands mid-run, however loaded the machine.

    Returns the finished process with its stdout and (progress bars included) stderr as text.
    """
    with tempfile.TemporaryDirectory() as scratch:
        marker = Path(scratch) / "paused"
        with open(Path(scratch) / "out", "w+") as out, open(Path(scratch) / "err", "w+") as err:
            proc = subprocess.Popen(paced_argv(marker, f"read:{before_read}", argv), stdout=out, stderr=err,
                                    env=ENV)
            try:
                wait_for_marker(proc, marker)
                proc.send_signal(sig)
                proc.wait(240)
            finally:
                proc.kill()
                proc.wait()
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
