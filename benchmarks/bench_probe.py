"""Wall time and peak memory of ``condense probe`` against the bare forward pass (the floor).

For each model, number of sequences and batch size, three measurements, each in a fresh child
process that loads the model first (loading is excluded from time and peak):

- ``floor``: tokenise, pad exactly as the probe does (right padding, the probe's pad id) and run
  ``model(..., output_hidden_states=True)`` under ``torch.inference_mode`` over every batch;
- ``probe``: ``probe_loaded`` on the same model, documents and settings (tokenising included);
- ``probe-s0``: the same with ``spectrum_seqs=0`` (the cost of the spectral metrics).

A second table gives the probe's peak memory against the number of sequences (``--memory-seqs``
at ``--memory-max-length`` tokens) to show it stays flat. Peak memory is the child's peak resident
set size while measuring (the kernel's VmHWM, reset after loading); ``maxrss`` is ``ru_maxrss`` of
the child's whole life, loading included.

Usage (from the repository root)::

    python benchmarks/bench_probe.py                      # the default grid (about an hour on 2 cores)
    python benchmarks/bench_probe.py --quick --models tiny-gpt2
    python benchmarks/bench_probe.py --models smollm2-135m --num-seqs 10,100 --batch-sizes 1,8

Writes ``benchmarks/results.csv`` (one row per measurement, with its command, date, load average and
code state) and ``benchmarks/results.md`` (the tables) and prints the tables. ``--append`` adds to
the CSV instead, so a grid too long for one sitting can be measured in parts.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_CACHE, TINY, long_corpus, maxrss_mb, peak_rss_mb,  # noqa: E402
                    prepared_model, reset_peak_rss, rss_mb)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=f"smollm2-135m,{TINY}",
                   help=f"comma list: {TINY}, smollm2-135m, or anything `condense probe` loads")
    p.add_argument("--corpus", default=None, help="corpus spec (default: the pydoc paragraphs x6, see common.py)")
    p.add_argument("--num-seqs", type=_ints, default=[10, 100], help="comma list (default 10,100)")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8], help="comma list (default 1,8)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--spectrum-seqs", type=int, default=8, help="spectrum sequences of the `probe` rows (default 8)")
    p.add_argument("--memory-seqs", type=_ints, default=[10, 100, 1000],
                   help="num-seqs of the memory table (default 10,100,1000; empty string skips it)")
    p.add_argument("--memory-max-length", type=int, default=128,
                   help="tokens per sequence in the memory table (default 128, so 1000 sequences fit in minutes)")
    p.add_argument("--memory-batch-size", type=int, default=8, help="batch size of the memory table (default 8)")
    p.add_argument("--quick", action="store_true", help="skip the 1000-sequence memory rows")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--dtype", default="auto", help="model weights: auto | float32 | bfloat16 | float16 (default auto)")
    p.add_argument("--init", default="pretrained", help="pretrained | random (e.g. qwen3-4b from its shipped config)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"checkpoints and corpus (default {DEFAULT_CACHE})")
    p.add_argument("--out", type=Path, default=HERE / "results", help="writes OUT.csv and OUT.md (default benchmarks/results)")
    p.add_argument("--append", action="store_true",
                   help="add to OUT.csv's rows (a later measurement of the same case replaces the earlier)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.memory_seqs = [n for n in args.memory_seqs if n < 1000]
    return args


# ---------------------------------------------------------------- child: one measurement


def floor_forward(loaded, documents, num_seqs: int, max_length: int, batch_size: int) -> int:
    """Bare forward passes with ``output_hidden_states=True`` over the probe's batches; returns tokens."""
    import torch

    from condense.probing.corpus import build_sequences

    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)  # the probe's choice
    device = loaded.model.get_input_embeddings().weight.device
    sequences = build_sequences(documents, tok, max_length, num_seqs)
    with torch.inference_mode():
        for lo in range(0, len(sequences), batch_size):
            chunk = sequences[lo: lo + batch_size]
            width = max(len(s.input_ids) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):  # right padding, as the probe
                ids[r, : len(s.input_ids)] = torch.tensor(s.input_ids)
                attention[r, : len(s.input_ids)] = 1
            loaded.model(input_ids=ids.to(device), attention_mask=attention.to(device), output_hidden_states=True)
    return sum(len(s.input_ids) for s in sequences)


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less sensitive to other load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(job: dict) -> dict:
    """Load, then time one measurement; returns the row (seconds, MiB)."""
    import torch

    from condense.probing.corpus import read_documents
    from condense.models import load_model
    from condense.probing.probe import ProbeSettings, probe_loaded

    loaded = load_model(job["path"], dtype=job["dtype"], device=job["device"], init=job["init"])
    documents = list(read_documents(job["corpus"]))
    cuda = loaded.model.get_input_embeddings().weight.device.type == "cuda"
    gc.collect()
    loaded_mb = rss_mb()
    peak_reset = reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    if job["variant"] == "floor":
        tokens = floor_forward(loaded, documents, job["num_seqs"], job["max_length"], job["batch_size"])
    else:
        cfg = ProbeSettings(corpus=job["corpus"], num_seqs=job["num_seqs"], max_length=job["max_length"],
                            batch_size=job["batch_size"], spectrum_seqs=job["spectrum_seqs"])
        tokens = probe_loaded(loaded, cfg, documents=documents, quiet=True).run["counts"]["tokens"]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {**job, "tokens": tokens, "seconds": round(seconds, 3), "cpu_seconds": round(_cpu_seconds() - cpu_start, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "loaded_mb": round(loaded_mb, 1), "peak_mb": round(peak_rss_mb(), 1) if peak_reset else None,
            "maxrss_mb": round(maxrss_mb(), 1), "threads": torch.get_num_threads(),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}


# ---------------------------------------------------------------- parent: the grid and the tables


def jobs(args: argparse.Namespace, paths: dict[str, str], corpus: str) -> list[dict]:
    base = {"corpus": corpus, "device": args.device, "dtype": args.dtype, "init": args.init}
    out = []
    for model, path in paths.items():
        for n in args.num_seqs:
            for b in args.batch_sizes:
                for variant, spectrum in (("floor", None), ("probe", args.spectrum_seqs), ("probe-s0", 0)):
                    out.append({**base, "table": "floor", "model": model, "path": path, "num_seqs": n,
                                "max_length": args.max_length, "batch_size": b, "variant": variant,
                                "spectrum_seqs": spectrum})
        for n in args.memory_seqs:
            out.append({**base, "table": "memory", "model": model, "path": path, "num_seqs": n,
                        "max_length": args.memory_max_length, "batch_size": args.memory_batch_size,
                        "variant": "probe", "spectrum_seqs": args.spectrum_seqs})
    return out


def run_child(job: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                          env=CHILD_ENV, cwd=ROOT, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  FAILED: {tail}", file=sys.stderr)
        return {**job, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without extra dependencies."""
    cells = [[("" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v)) for v in row]
             for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def floor_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, sequences, length, batch): the floor, the probe, their ratios (wall, CPU), peaks."""
    keyed = rows.set_index(["model", "num_seqs", "max_length", "batch_size", "variant"])
    gpu = rows["gpu_peak_mb"].notna().any()
    lines = []
    for key, _ in rows.groupby(["model", "num_seqs", "max_length", "batch_size"], sort=False):
        model, n, length, b = key

        def get(variant: str, col: str, key: tuple = key):
            return keyed[col].get((*key, variant))

        def ratio(variant: str, col: str = "seconds", get=get):
            num, den = get(variant, col), get("floor", col)
            return round(num / den, 3) if num and den else None

        line = {"model": model, "seqs x tokens": f"{n} x {length}", "batch": b,
                "floor s": get("floor", "seconds"), "probe s": get("probe", "seconds"),
                "probe / floor": ratio("probe"), "probe cpu / floor cpu": ratio("probe", "cpu_seconds"),
                "probe s0 s": get("probe-s0", "seconds"), "s0 / floor": ratio("probe-s0"),
                "s0 cpu / floor cpu": ratio("probe-s0", "cpu_seconds"), "loaded MiB": get("floor", "loaded_mb")}
        for variant, label in (("floor", "floor"), ("probe", "probe"), ("probe-s0", "s0")):
            line[f"{label} peak MiB"] = get(variant, "peak_mb")
            if gpu:
                line[f"{label} GPU peak MiB"] = get(variant, "gpu_peak_mb")
        lines.append(line)
    return pd.DataFrame(lines)


def memory_table(rows: pd.DataFrame) -> pd.DataFrame:
    columns = ["model", "num_seqs", "max_length", "batch_size", "tokens", "seconds", "loaded_mb", "peak_mb", "maxrss_mb"]
    frame = rows[columns + (["gpu_peak_mb"] if rows["gpu_peak_mb"].notna().any() else [])].copy()
    frame["peak - loaded MiB"] = (frame["peak_mb"] - frame["loaded_mb"]).round(1)
    return frame.rename(columns={"num_seqs": "seqs", "max_length": "tokens/seq", "batch_size": "batch",
                                 "loaded_mb": "loaded MiB", "peak_mb": "peak MiB", "maxrss_mb": "maxrss MiB",
                                 "gpu_peak_mb": "GPU peak MiB"})


def code_state() -> str:
    """Commit, and a digest of the files that decide the probe's speed (they are being worked on)."""
    digest = hashlib.sha256()
    for name in ("probing/probe.py", "probing/extract.py", "probing/batching.py", "metrics/streaming.py"):
        path = ROOT / "condense" / name
        digest.update(path.read_bytes() if path.exists() else b"")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "condense"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout
    return f"{commit.strip()}{'+dirty' if dirty else ''} sha256:{digest.hexdigest()[:12]}"


def report(frame: pd.DataFrame) -> str:
    """The markdown: machine, one line per invocation (command, date, load, code), the two tables."""
    import torch
    import transformers

    runs = frame.drop_duplicates("command", keep="last")
    lines = [f"- `{r.command}`: {r.date}, load average {r.load_before:.2f} -> {r.load_after:.2f}, code {r.code}"
             for r in runs.itertuples()]
    sections = [f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, transformers "
                f"{transformers.__version__}. Measured with:\n\n" + "\n".join(lines)]
    ok = frame[frame["error"].isna()].drop_duplicates(
        ["table", "model", "num_seqs", "max_length", "batch_size", "variant"], keep="last")
    if not ok[ok.table == "floor"].empty:
        sections.append("Time and peak memory against the floor (`s0`: the probe with `--spectrum-seqs 0`; peak: "
                        "resident set while measuring, the loaded model included):\n\n"
                        + markdown(floor_table(ok[ok.table == "floor"])))
    if not ok[ok.table == "memory"].empty:
        sections.append("Peak memory of the probe against the number of sequences:\n\n"
                        + markdown(memory_table(ok[ok.table == "memory"])))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    load_before = os.getloadavg()[0]
    corpus = args.corpus or str(long_corpus(args.cache))
    paths = {m: prepared_model(m, args.cache) for m in args.models.split(",") if m}
    rows = []
    todo = jobs(args, paths, corpus)
    for k, job in enumerate(todo, start=1):
        print(f"[{k}/{len(todo)}] {job['model']} {job['variant']} seqs={job['num_seqs']} len={job['max_length']} "
              f"batch={job['batch_size']}", file=sys.stderr, flush=True)
        rows.append(run_child(job))
    frame = pd.DataFrame(rows).drop(columns=["path"])
    if "error" not in frame:
        frame["error"] = None
    command = shlex.join(["python", "benchmarks/bench_probe.py", *(sys.argv[1:] if argv is None else argv)])
    frame = frame.assign(command=command, date=str(datetime.date.today()), load_before=round(load_before, 2),
                         load_after=round(os.getloadavg()[0], 2), code=code_state())
    csv = args.out.with_suffix(".csv")
    if args.append and csv.exists():
        frame = pd.concat([pd.read_csv(csv), frame], ignore_index=True)
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    text = report(frame)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    failed = int(frame["error"].notna().sum())
    if failed:
        sys.exit(f"{failed} of {len(frame)} measurements failed (see {csv})")


if __name__ == "__main__":
    main()
