"""Cost of the seeded token sample of one layer: ``update`` per batch and ``finalize``.

For each width D: a :class:`~condense.metrics.token_sample.TokenSampleAccumulator` with ``--k``
tokens is fed ``--batches`` batches of ``--batch`` texts x ``--tokens`` positions of random float32
hidden states (in the probe's layout: mask, global text ids, positions), then finalised. Printed:
the median ``update`` time over the batches after the sample is full (the steady state, where only
tokens below the current threshold are gathered), the first batch's (it fills the sample), and the
``finalize`` time (one layer; the Gaussian baselines are cached per (K, D) and timed apart, since
a run pays them once, not per layer), with the torch thread count and the load average: on a
shared machine, two torch threads beside a busy neighbour make the many small operations of
``update`` tens of times slower than one thread (``--threads 1``).

Usage (from the repository root)::

    python benchmarks/bench_token_sample.py                    # K 4096, D 576 and 4096
    python benchmarks/bench_token_sample.py --dims 576 --k 1024 --batches 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from condense.metrics.isotropy import gauss_isoscore, gauss_twonn_id
from condense.metrics.token_sample import TokenSampleAccumulator


def measure(k: int, dim: int, batch: int, tokens: int, batches: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    acc = TokenSampleAccumulator(k, dim)
    positions = torch.arange(tokens).expand(batch, -1)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    times = []
    for step in range(batches):
        hidden = torch.randn(batch, tokens, dim, generator=gen)
        text_index = torch.arange(step * batch, (step + 1) * batch)
        start = time.perf_counter()
        acc.update(hidden, mask, text_index, positions)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    gauss_isoscore(len(acc.keys), dim), gauss_twonn_id(len(acc.keys), dim)
    baselines = time.perf_counter() - start
    start = time.perf_counter()
    acc.finalize()
    finalize = time.perf_counter() - start
    full = next((i for i in range(batches) if (i + 1) * batch * (tokens - 1) >= k), batches - 1)
    steady = times[full + 1:] or times
    return {"first_update_s": times[0], "update_median_s": statistics.median(steady),
            "finalize_s": finalize, "gauss_baselines_once_s": baselines, "kept": len(acc.keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--dims", type=int, nargs="+", default=[576, 4096])
    parser.add_argument("--batch", type=int, default=8, help="texts per batch")
    parser.add_argument("--tokens", type=int, default=512, help="positions per text")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}; "
          f"batches of {args.batch} x {args.tokens}")
    print(f"{'K':>6} {'D':>6} {'kept':>6} {'1st update s':>13} {'update s':>10} {'finalize s':>11} {'baselines s':>12}")
    for dim in args.dims:
        r = measure(args.k, dim, args.batch, args.tokens, args.batches)
        print(f"{args.k:>6} {dim:>6} {r['kept']:>6} {r['first_update_s']:>13.4f} {r['update_median_s']:>10.4f} "
              f"{r['finalize_s']:>11.2f} {r['gauss_baselines_once_s']:>12.2f}")


if __name__ == "__main__":
    main()
