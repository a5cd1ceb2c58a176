"""The token sample's cost against its size K: one process, the model loaded once, one probe per K.

For each ``--k`` (0 turns the sample off) it prints the probe's wall seconds and, of those, the
seconds of the sample's end-of-run statistics (run.json ``corpus_sample.finalize_seconds``). The
end-of-run cost grows as K^2 D per layer, which is why ``--corpus-sample auto`` stops at 1024.

    python benchmarks/bench_sample_sizes.py --model smollm2-135m --num-seqs 10 --k 0,512,1024,2048,auto-budget
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_CACHE, long_corpus  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--num-seqs", type=int, default=10)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--k", default="0,512,1024,2048,auto-budget",
                   help="comma list of K; auto-budget: the 256 MB budget without the 1024 cap")
    args = p.parse_args()
    from condense.metrics.token_sample import sample_size_for_budget
    from condense.models import load_model
    from condense.probing.probe import ProbeSettings, probe_loaded

    corpus = str(long_corpus(DEFAULT_CACHE))
    loaded = load_model(args.model, device="cpu")
    print(f"{args.model}, {args.num_seqs} x {args.max_length} tokens, load average {os.getloadavg()[0]:.2f}")
    print("| K | probe s | end-of-run statistics s |\n|---|---|---|")
    for value in args.k.split(","):
        k = value
        if value == "auto-budget":
            entries = loaded.info["num_layers"] + 1
            k = sample_size_for_budget(entries, loaded.info["hidden_size"])
        start = time.perf_counter()
        result = probe_loaded(loaded, ProbeSettings(corpus=corpus, num_seqs=args.num_seqs, max_length=args.max_length,
                                                    corpus_sample=int(k)))
        record = result.run["corpus_sample"]
        print(f"| {record['k']} | {time.perf_counter() - start:.1f} | {record.get('finalize_seconds', 0.0):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
