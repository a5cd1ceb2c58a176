"""Whole-process cost of ``condense probe`` against the bare forward pass (the floor), idle, beside a busy
neighbour, and on a GPU.

Each measurement is one fresh process, timed whole (model load, tokenising, writing the run folder):

- ``floor``: ``benchmarks/floor.py``: the model loaded as the probe loads it, then
  ``model(..., output_hidden_states=True)`` over the same token sequences, batch 1;
- ``probe``: ``condense probe MODEL --corpus DOCS.jsonl --num-seqs N`` with default settings
  (through ``benchmarks/probe_cli.py``, the CLI's own entry point, which also reports the GPU peak);
- on the CPU also ``floor-passive``: the floor with ``OMP_WAIT_POLICY=PASSIVE``. torch's OpenMP
  threads spin while they wait for each other, and when another process holds a core the spinning
  burns the time the awaited thread needs: the plain floor beside a busy neighbour is several times
  slower than it needs to be. The probe's worker threads make libgomp's pool larger than the core
  count, and libgomp then spins only briefly (as with the passive policy), so the probe escapes that
  slowdown. The passive floor is the bare forward pass without it: the fair floor under load.

Situations (``--situations``): ``idle`` (nothing else of ours running), ``busy`` (a second CPU-bound
process beside both the floor and the probe: a loop of 2048 x 2048 float32 matmuls on
``--neighbour-threads`` torch threads, started by this script), ``gpu`` (floor and probe with
``--device cuda``). Floor and probe alternate, ``--repeats`` times each, and the medians are
reported. Then the probe's peak memory for ``--memory-seqs`` sequences (and the floor's at 100),
to show it flat in the number of sequences. Last, the token sample's cost (``--sample-models``,
``--sample-seqs`` sequences, idle): the default probe against the same probe with
``--corpus-sample 0``, and the seconds its end-of-run statistics took (run.json
``corpus_sample.finalize_seconds``), for SmolLM2-135M and ``wide-4096``, a random-init 3-block Llama
of width 4096 (4 hidden-state entries, so the budget allows the largest K: the worst case of the
sample's K^2 D per-layer cost). Wall and CPU time (user + system of the process and
its threads) and peak resident memory come from ``os.wait4``; GPU peaks from
``torch.cuda.max_memory_allocated``. Before anything is measured, each model is warmed up by one
unmeasured floor of one sequence (the first load of a GGUF alias converts it into condense's cache).

Usage (from the repository root; ``make bench`` runs the first)::

    python benchmarks/bench_probe.py                                  # CPU: idle, busy, memory (39 min on 2 idle cores)
    python benchmarks/bench_probe.py --quick                           # 10 sequences, no 1000-sequence row
    python benchmarks/bench_probe.py --situations gpu --model qwen3-4b --init random --num-seqs 100 --out benchmarks/results_gpu

Writes ``OUT.md`` (machine, date, load average, commit, command, the tables) and ``OUT.csv`` (every
measurement), and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_CACHE, WIDE, bench_jsonl, prepared_model, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
             "MPLBACKEND": "Agg"}
TARGETS = {"idle": 1.10, "busy": 1.25, "gpu": 1.15}  # issue 11: probe wall / floor wall
MEMORY_TARGET, FLAT_TARGET = 1.25, 0.10


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="anything `condense probe` loads (default smollm2-135m)")
    p.add_argument("--corpus", default=None, help="JSONL of documents of >= --max-length tokens (default: pydoc prose)")
    p.add_argument("--num-seqs", type=int, default=30, help="sequences of the time table (default 30)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--situations", default="idle,busy", help="comma list of idle, busy, gpu (default idle,busy)")
    p.add_argument("--repeats", type=int, default=2, help="floor/probe pairs per situation (default 2)")
    p.add_argument("--neighbour-threads", type=int, default=2, help="torch threads of the busy neighbour (default 2)")
    p.add_argument("--memory-seqs", type=_ints, default=[10, 100, 1000],
                   help="sequences of the memory table (default 10,100,1000; '' skips it)")
    p.add_argument("--sample-models", default=f"smollm2-135m,{WIDE}",
                   help=f"models of the token-sample table (default smollm2-135m,{WIDE}; '' skips it)")
    p.add_argument("--sample-seqs", type=int, default=10, help="sequences of the token-sample table (default 10)")
    p.add_argument("--dtype", default="auto", help="model weights (default auto)")
    p.add_argument("--init", default="pretrained", help="pretrained | random (e.g. qwen3-4b from its shipped config)")
    p.add_argument("--probe-args", default="", help="extra `condense probe` options, e.g. '--batch-size 8'")
    p.add_argument("--quick", action="store_true", help="10 sequences, one repeat, memory table at 10 and 100")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"corpus cache (default {DEFAULT_CACHE})")
    p.add_argument("--out", type=Path, default=HERE / "results", help="writes OUT.md and OUT.csv (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.quick:
        args.num_seqs, args.repeats = 10, 1
        args.memory_seqs = [n for n in args.memory_seqs if n <= 100]
    args.situations = [s for s in args.situations.split(",") if s]
    unknown = set(args.situations) - set(TARGETS)
    if unknown:
        p.error(f"unknown situation {sorted(unknown)}; use idle, busy, gpu")
    return args


# ---------------------------------------------------------------- one measured process


def measure(kind: str, args: argparse.Namespace, corpus: Path, num_seqs: int, device: str, model: str | None = None,
            extra: tuple[str, ...] = ()) -> dict:
    """Run the floor (``floor``, ``floor-passive``) or the probe as a fresh process; wall, CPU and peak
    memory of that process alone (and for the probe, its run.json's token sample: K and its cost)."""
    model = model or args.model
    init = "pretrained" if model == WIDE else args.init
    common = ["--corpus", str(corpus), "--num-seqs", str(num_seqs), "--max-length", str(args.max_length),
              "--device", device, "--dtype", args.dtype, "--init", init]
    model = prepared_model(model, args.cache) if model == WIDE else model
    with tempfile.TemporaryDirectory(prefix="condense-bench-") as tmp:
        env = {**CHILD_ENV, "OMP_WAIT_POLICY": "PASSIVE"} if kind == "floor-passive" else CHILD_ENV
        if kind.startswith("floor"):
            cmd = [sys.executable, str(HERE / "floor.py"), model, *common]
        else:
            cmd = [sys.executable, str(HERE / "probe_cli.py"), model, *common, "--out", f"{tmp}/run", "-q",
                   *shlex.split(args.probe_args), *extra]
        result = run_measured(cmd, env, ROOT)
        manifest = Path(tmp) / "run" / "run.json"
        sample = json.loads(manifest.read_text()).get("corpus_sample", {}) if manifest.exists() else {}
    row = {"kind": kind, "device": device, "num_seqs": num_seqs, "max_length": args.max_length,
           "wall_s": round(result["wall_s"], 2), "load_before": result["load_before"], "load_after": result["load_after"]}
    if result["error"]:
        print(f"  FAILED {kind}: {result['error']}", file=sys.stderr)
        return {**row, "error": result["error"]}
    facts = json.loads(result["stdout"].strip().splitlines()[-1])
    return {**row, "cpu_s": result["cpu_s"], "peak_mb": result["peak_mb"], "gpu_peak_mb": facts.get("gpu_peak_mb"),
            "sample_k": sample.get("k"), "sample_finalize_s": sample.get("finalize_seconds")}


class Neighbour:
    """A second CPU-bound process for the ``busy`` situation: float32 matmuls in a loop."""

    def __init__(self, threads: int) -> None:
        code = ("import torch\ntorch.set_num_threads(%d)\na = torch.randn(2048, 2048)\nwhile True:\n    a @ a\n" % threads)
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=CHILD_ENV)
        time.sleep(3)  # imported and spinning

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# ---------------------------------------------------------------- tables


def warm_up(args: argparse.Namespace, corpus: Path) -> None:
    """One unmeasured floor of one sequence per model: the first load of a GGUF alias converts it into
    condense's cache, which would otherwise inflate whichever measurement came first (on a new
    machine at 00c8bb8 the first floor took 35.2 s, the second 19.2 s)."""
    models = [args.model] if args.situations or args.memory_seqs else []
    models += [m for m in args.sample_models.split(",") if m and m not in models]
    for model in models:
        print(f"[warm-up] {model}", file=sys.stderr, flush=True)
        measure("floor", args, corpus, 1, "cuda" if args.situations == ["gpu"] else "cpu", model)


def time_rows(args: argparse.Namespace, corpus: Path) -> list[dict]:
    rows = []
    for situation in args.situations:
        device = "cuda" if situation == "gpu" else "cpu"
        neighbour = Neighbour(args.neighbour_threads) if situation == "busy" else None
        try:
            for r in range(args.repeats):
                for kind in ("floor", "probe") if device == "cuda" else ("floor", "floor-passive", "probe"):
                    print(f"[{situation} {r + 1}/{args.repeats}] {kind}", file=sys.stderr, flush=True)
                    rows.append({"table": "time", "situation": situation, **measure(kind, args, corpus, args.num_seqs, device)})
        finally:
            if neighbour:
                neighbour.stop()
    return rows


def memory_rows(args: argparse.Namespace, corpus: Path) -> list[dict]:
    rows = []
    jobs = [("probe", n) for n in args.memory_seqs] + ([("floor", 100)] if 100 in args.memory_seqs else [])
    for kind, n in jobs:
        print(f"[memory] {kind} {n} sequences", file=sys.stderr, flush=True)
        rows.append({"table": "memory", "situation": "idle", **measure(kind, args, corpus, n, "cpu")})
    return rows


def sample_rows(args: argparse.Namespace, corpus: Path) -> list[dict]:
    rows = []
    for model in [m for m in args.sample_models.split(",") if m]:
        for r in range(args.repeats):
            for label, extra in (("probe", ()), ("probe-no-sample", ("--corpus-sample", "0"))):
                print(f"[sample {model} {r + 1}/{args.repeats}] {label}", file=sys.stderr, flush=True)
                rows.append({"table": "sample", "situation": "idle", "sample_model": model,
                             **measure(label, args, corpus, args.sample_seqs, "cpu", model, extra)})
    return rows


def sample_table(rows: list[dict]) -> str:
    lines = ["| model | load avg | K | probe wall s | probe --corpus-sample 0 wall s | **difference s** | ratio | "
             "end-of-run statistics s | probe CPU s | without CPU s | probe peak MiB | without peak MiB |",
             "|" + "---|" * 12]
    for model in dict.fromkeys(r["sample_model"] for r in rows):
        sub = [r for r in rows if r["sample_model"] == model]
        loads = [r["load_before"] for r in sub]
        on, off = _median(sub, "probe", "wall_s"), _median(sub, "probe-no-sample", "wall_s")
        k = next((r["sample_k"] for r in sub if r["kind"] == "probe" and r.get("sample_k")), None)
        lines.append(f"| {model} | {min(loads):.2f}-{max(loads):.2f} | {k or ''} | {_num(on)} | {_num(off)} | "
                     f"**{_num(on - off if on and off else None)}** | {_ratio(on, off)} | "
                     f"{_num(_median(sub, 'probe', 'sample_finalize_s'), 2)} | {_num(_median(sub, 'probe', 'cpu_s'))} | "
                     f"{_num(_median(sub, 'probe-no-sample', 'cpu_s'))} | {_num(_median(sub, 'probe', 'peak_mb'))} | "
                     f"{_num(_median(sub, 'probe-no-sample', 'peak_mb'))} |")
    return "\n".join(lines)


def _median(rows: list[dict], kind: str, key: str):
    values = [r[key] for r in rows if r["kind"] == kind and r.get(key) is not None and "error" not in r]
    return statistics.median(values) if values else None


def _ratio(a, b) -> str:
    return f"{a / b:.3f}" if a and b else ""


def _num(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def time_table(rows: list[dict]) -> str:
    lines = ["| situation | load avg | floor wall s | probe wall s | **probe / floor** | target | passive floor wall s | "
             "probe / passive floor | floor CPU s | probe CPU s | CPU ratio | floor peak MiB | probe peak MiB | "
             "peak ratio | floor GPU MiB | probe GPU MiB |",
             "|" + "---|" * 16]
    for situation in dict.fromkeys(r["situation"] for r in rows):
        sub = [r for r in rows if r["situation"] == situation]
        loads = [r["load_before"] for r in sub]
        fw, pw = _median(sub, "floor", "wall_s"), _median(sub, "probe", "wall_s")
        passive = _median(sub, "floor-passive", "wall_s")
        fc, pc = _median(sub, "floor", "cpu_s"), _median(sub, "probe", "cpu_s")
        fm, pm = _median(sub, "floor", "peak_mb"), _median(sub, "probe", "peak_mb")
        fg, pg = _median(sub, "floor", "gpu_peak_mb"), _median(sub, "probe", "gpu_peak_mb")
        lines.append(f"| {situation} | {min(loads):.2f}-{max(loads):.2f} | {_num(fw)} | {_num(pw)} | "
                     f"**{_ratio(pw, fw)}** | <= {TARGETS[situation]} | {_num(passive)} | {_ratio(pw, passive)} | "
                     f"{_num(fc)} | {_num(pc)} | {_ratio(pc, fc)} | {_num(fm)} | {_num(pm)} | {_ratio(pm, fm)} | "
                     f"{_num(fg)} | {_num(pg)} |")
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    probes = {r["num_seqs"]: r for r in rows if r["kind"] == "probe" and "error" not in r}
    floor = next((r for r in rows if r["kind"] == "floor" and "error" not in r), None)
    first = probes[min(probes)]["peak_mb"] if probes else None
    lines = ["| sequences | tokens | probe wall s | probe peak MiB | vs fewest sequences | floor peak MiB | probe / floor |",
             "|" + "---|" * 7]
    for n, r in sorted(probes.items()):
        same_floor = floor if floor and floor["num_seqs"] == n else None
        lines.append(f"| {n} | {n * r['max_length']} | {r['wall_s']} | {r['peak_mb']} | {_ratio(r['peak_mb'], first)} | "
                     f"{same_floor['peak_mb'] if same_floor else ''} | "
                     f"{_ratio(r['peak_mb'], same_floor['peak_mb']) if same_floor else ''} |")
    return "\n".join(lines) + (f"\n\nTargets: probe / floor <= {MEMORY_TARGET} at 100 sequences; peak within "
                               f"{FLAT_TARGET:.0%} from the fewest to the most sequences.")


def machine() -> str:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0.0) if Path("/proc/meminfo").exists() else 0.0
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB{gpu}; Python {platform.python_version()}, torch "
            f"{torch.__version__}, transformers {transformers.__version__}")


def code_state() -> str:
    """Commit of the condense package the children import, and whether its files differ from it."""
    import condense

    repo = Path(condense.__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "condense"], capture_output=True, text=True, check=False).stdout
    return f"{commit or 'unknown'}{'+dirty' if dirty else ''} ({repo})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_probe.py", *(sys.argv[1:] if argv is None else argv)])
    corpus = Path(args.corpus) if args.corpus else bench_jsonl(args.cache, max([args.num_seqs, *args.memory_seqs]))
    started = datetime.datetime.now().isoformat(timespec="minutes")
    warm_up(args, corpus)
    rows = (time_rows(args, corpus) + (memory_rows(args, corpus) if args.memory_seqs else [])
            + (sample_rows(args, corpus) if args.sample_models else []))
    import pandas as pd

    frame = pd.DataFrame(rows).assign(model=args.model, command=command, date=started, code=code_state())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    sections = [f"Measured {started} on {machine()}; code {code_state()}; load average (1 min) at the start of "
                f"each measurement in the tables.\n\n`{command}`",
                f"Whole process (model load included), {args.model}, {args.num_seqs} sequences of {args.max_length} "
                f"tokens, default `condense probe` settings{(' + ' + args.probe_args) if args.probe_args else ''}; "
                f"medians of {args.repeats}:\n\n" + time_table([r for r in rows if r["table"] == "time"])]
    if args.memory_seqs:
        sections.append("Peak memory (resident set of the whole process) against the number of sequences, idle:\n\n"
                        + memory_table([r for r in rows if r["table"] == "memory"]))
    if args.sample_models:
        sections.append(f"The token sample's cost at the end of a run ({args.sample_seqs} sequences of {args.max_length} "
                        f"tokens, idle, medians of {args.repeats}): the default probe against `--corpus-sample 0`; "
                        f"`{WIDE}` is a random-init 3-block Llama of width 4096:\n\n"
                        + sample_table([r for r in rows if r["table"] == "sample"]))
    text = "\n\n".join(sections) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    failed = sum("error" in r and isinstance(r["error"], str) for r in rows)
    if failed:
        sys.exit(f"{failed} of {len(rows)} measurements failed (see {args.out.with_suffix('.csv')})")


if __name__ == "__main__":
    main()
