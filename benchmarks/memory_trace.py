"""The resident set of one ``condense probe`` over its run: a steady climb (something kept per
sequence) or a plateau with spikes (the largest momentary overlap of temporaries)?

Runs ``benchmarks/probe_cli.py ARGS`` as a child, reads its ``VmRSS`` from ``/proc`` every
``--every`` seconds, and prints the peak, when it happened, and the resident set at each tenth of
the run, with the mean of the middle and last thirds of the run (the plateau's drift); ``--csv``
keeps every sample (seconds, MiB). Linux only.

    python benchmarks/memory_trace.py --csv /tmp/rss.csv -- smollm2-135m --corpus DOCS.jsonl \\
        --num-seqs 150 --out /tmp/run -q
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def trace(cmd: list[str], every: float) -> tuple[list[tuple[float, float]], int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
    child = subprocess.Popen(cmd, env=env, cwd=HERE.parent, stdout=subprocess.DEVNULL)
    start, samples = time.perf_counter(), []
    while child.poll() is None:
        value = rss_mib(child.pid)
        if value is not None:
            samples.append((time.perf_counter() - start, value))
        time.sleep(every)
    return samples, child.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=float, default=0.2, help="seconds between samples (default 0.2)")
    p.add_argument("--csv", type=Path, default=None, help="write every sample here")
    p.add_argument("probe_args", nargs=argparse.REMAINDER, help="after --: arguments of condense probe")
    args = p.parse_args()
    probe_args = args.probe_args[1:] if args.probe_args[:1] == ["--"] else args.probe_args
    samples, code = trace([sys.executable, str(HERE / "probe_cli.py"), *probe_args], args.every)
    if code != 0 or not samples:
        sys.exit(f"memory_trace: the probe exited with {code}")
    if args.csv:
        args.csv.write_text("seconds,rss_mib\n" + "".join(f"{t:.2f},{m:.1f}\n" for t, m in samples))
    seconds = samples[-1][0]
    peak_t, peak = max(samples, key=lambda s: s[1])
    print(f"{len(samples)} samples over {seconds:.1f} s; peak {peak:.1f} MiB at {peak_t:.1f} s "
          f"({peak_t / seconds:.0%} of the run)")
    tenths = [max(m for t, m in samples if t <= seconds * k / 10) for k in range(1, 11)]
    print("running peak at each tenth: " + ", ".join(f"{m:.0f}" for m in tenths))
    thirds = [[m for t, m in samples if seconds * k / 3 <= t < seconds * (k + 1) / 3] for k in range(3)]
    middle, last = (sum(part) / max(len(part), 1) for part in thirds[1:])
    print(f"mean resident set: middle third {middle:.1f} MiB, last third {last:.1f} MiB ({last - middle:+.1f})")


if __name__ == "__main__":
    main()
