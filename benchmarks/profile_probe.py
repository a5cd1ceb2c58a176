"""Where the probe's time goes beyond the forward pass: cProfile of one ``probe_loaded`` call.

Loads the model first (not profiled), then profiles the probe and prints (1) the cumulative time
of the forward pass, of every condense function, and of the rest, and (2) the top callees by own
time. With ``--threads 1`` (default) times are CPU seconds of this process, so other load on the
machine barely moves them; any other ``--threads`` (0: torch's default) profiles wall-clock time.
cProfile sees only the main thread: on the CPU the probe measures layers in worker threads, which
then shows as waiting (``acquire``); ``--inline`` measures them in the main thread instead (as on
an accelerator), so each metric's own cost is listed. Writes the raw profile to ``--stats`` for
``snakeviz``/``pstats``.

Usage::

    python benchmarks/profile_probe.py --model smollm2-135m --num-seqs 10 --max-length 512 --inline
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_CACHE, long_corpus, prepared_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default=None, help="corpus spec (default: the pydoc paragraphs x6)")
    p.add_argument("--num-seqs", type=int, default=10)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", default="auto", help="an integer or auto (default)")
    p.add_argument("--spectrum-seqs", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default, wall-clock profile")
    p.add_argument("--inline", action="store_true", help="measure the layers in the main thread (see above)")
    p.add_argument("--top", type=int, default=25, help="rows of the own-time table")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--stats", type=Path, default=Path("/tmp/condense-probe.prof"))
    args = p.parse_args(argv)

    import torch

    from condense.probing.corpus import read_documents
    from condense.models import load_model
    from condense.probing import probe as probe_module
    from condense.probing.probe import ProbeSettings, probe_loaded

    corpus = args.corpus or str(long_corpus(args.cache))
    loaded = load_model(prepared_model(args.model, args.cache), device=args.device)
    documents = list(read_documents(corpus))
    cfg = ProbeSettings(corpus=corpus, num_seqs=args.num_seqs, max_length=args.max_length,
                        batch_size=args.batch_size if args.batch_size == "auto" else int(args.batch_size),
                        spectrum_seqs=args.spectrum_seqs)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.inline:
        probe_module.HOLD_LIMIT = 0
    profiler = cProfile.Profile(time.process_time if args.threads == 1 else time.perf_counter)
    profiler.runcall(probe_loaded, loaded, cfg, documents=documents, quiet=True)
    profiler.dump_stats(args.stats)
    report(pstats.Stats(profiler), args.top)


def report(stats: pstats.Stats, top: int) -> None:
    """Cumulative time of the model's forward and of condense's own functions, then own-time leaders."""
    entries = stats.stats  # {(file, line, name): (calls, primitive calls, own, cumulative, callers)}
    total = max(v[3] for v in entries.values())
    forward = max((v[3] for (f, _, name), v in entries.items()
                   if name == "forward" and "transformers/models" in f), default=0.0)
    # the outermost model forward is the largest cumulative "forward" in transformers' model files
    print(f"probe_loaded total {total:8.2f} s  (the largest cumulative time)")
    print(f"model forward      {forward:8.2f} s  ({forward / total:.1%})")
    print(f"beyond forward     {total - forward:8.2f} s  ({(total - forward) / total:.1%})\n")
    print(f"{'cumulative s':>12} {'own s':>8} {'calls':>7}  condense function")
    own = sorted(((v[3], v[2], v[0], f"{Path(f).parent.name}/{Path(f).name}:{line}({name})")
                  for (f, line, name), v in entries.items() if "/condense/" in f), reverse=True)
    for cum, tot, calls, label in own:
        if cum >= 0.005 * total:
            print(f"{cum:12.2f} {tot:8.2f} {calls:7d}  {label}")
    print(f"\n{'own s':>8} {'calls':>7}  top callees by own time")
    leaders = sorted(((v[2], v[0], f"{Path(f).name}:{name}") for (f, _, name), v in entries.items()), reverse=True)
    for tot, calls, label in leaders[:top]:
        print(f"{tot:8.2f} {calls:7d}  {label}")


if __name__ == "__main__":
    main()
