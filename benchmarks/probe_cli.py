"""``condense probe ARGS`` exactly as the command line runs it, then the GPU's peak allocation.

``bench_probe.py`` measures this process whole. Same entry point as the ``condense`` script
(``condense.cli.app.main``); the only addition is one JSON line on stdout at the end with the peak
GPU allocation, when CUDA was used.

    python benchmarks/probe_cli.py smollm2-135m --corpus docs.jsonl --num-seqs 30 --out /tmp/run -q
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from condense.cli.app import main as condense_main

    sys.argv = ["condense", "probe", *sys.argv[1:]]
    condense_main()
    torch = sys.modules.get("torch")
    facts = {}
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        facts["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
