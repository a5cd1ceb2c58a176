"""Send a signal to a running `condense` command once a probe's progress bar has moved."""

from __future__ import annotations

import subprocess
import sys
import threading

from tests.test_cli import ENV

__all__ = ["interrupt_when_probing"]


def interrupt_when_probing(argv: list, sig) -> subprocess.CompletedProcess:
    """Start `condense *argv`, send ``sig`` once the probe's progress bar shows a rate, wait for the exit.

    Returns the finished process with its stdout and (progress bars included) stderr as text.
    """
    proc = subprocess.Popen([sys.executable, "-m", "condense", *map(str, argv)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=ENV)
    seen = bytearray()
    moved = threading.Event()

    def watch():
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            if b"probing:" in seen and b"tok/s]" in seen[seen.rfind(b"probing:"):]:
                moved.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert moved.wait(240), seen.decode(errors="replace")
    proc.send_signal(sig)
    proc.wait(240)
    reader.join(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.read().decode(),
                                       seen.decode(errors="replace"))
