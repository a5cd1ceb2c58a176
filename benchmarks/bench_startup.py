"""Start-up cost: the first and the second ``condense probe`` of each offline alias against a bare
script, the start-up of the light commands, and the test suite's wall time before and after.

Each measurement is one fresh process, timed whole with ``os.wait4`` (wall, CPU, peak resident set):

- ``first``: ``condense probe ALIAS --num-seqs 1 --max-length 512`` with the alias's GGUF conversion
  removed from the cache (first use: parse, dequantise and store; the assembly of a split alias is
  done beforehand and not counted);
- ``second``: the same command again (the conversion read, memory-mapped, from the cache);
- ``bare``: ``benchmarks/bare_load.py``: ``AutoTokenizer``/``AutoModel.from_pretrained`` of the
  converted folder (a non-GGUF alias: its own folder) and one forward pass over the same tokens, the
  fastest load transformers offers;
- ``weights``: bytes of the loaded weights (the converted float32 safetensors), for the peak ratio.

Situations: ``idle`` (nothing else of ours running) and ``busy`` (beside ``bench_probe.Neighbour``,
a CPU-bound matmul loop); ``first`` is measured once, in the first situation. Bare and second
alternate, ``--repeats`` times each; the tables give medians. Then ``python -c pass``, ``condense
--help``, ``show``, ``models``, ``paper table``, ``probe --help`` (``--cli-repeats`` each), and with
``--suite-before REF`` the whole test suite (``python -m pytest -q``) at REF (``git archive`` of it
in a temporary folder) and in this tree, each with an empty ``CONDENSE_CACHE``, then this tree once more with the
cache it filled.

The benchmark uses its own cache (``--condense-cache``, default ``~/.cache/condense-bench/startup``),
so it never removes anything from yours; split aliases are assembled into it once.

Usage (from the repository root; ``make bench`` runs it with ``--suite-before``)::

    python benchmarks/bench_startup.py                          # every installed alias, idle and busy
    python benchmarks/bench_startup.py --aliases smollm2-135m --situations idle --repeats 1
    python benchmarks/bench_startup.py --suite-before 4263142   # and the suite before / after

Writes ``OUT.md`` and ``OUT.csv`` (default ``benchmarks/results_startup``) and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe import CHILD_ENV, Neighbour, code_state, machine  # noqa: E402
from common import DEFAULT_CACHE, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECOND_OVER_BARE_S, SECOND_WALL_S, QWEN_SECOND_S, PEAK_TARGET, CLI_TARGET_S = 1.0, 5.0, 15.0, 1.10, 1.0
CLI_COMMANDS = {"python -c pass": None, "condense --help": ["--help"], "condense show RUN": ["show", "RUN"],
                "condense models": ["models"], "condense paper table": ["paper", "table"],
                "condense probe --help": ["probe", "--help"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--aliases", default="", help="comma list (default: every installed offline alias)")
    p.add_argument("--max-length", type=int, default=512, help="tokens of the one sequence (default 512)")
    p.add_argument("--situations", default="idle,busy", help="comma list of idle, busy (default idle,busy)")
    p.add_argument("--repeats", type=int, default=3, help="bare/second pairs per alias and situation (default 3)")
    p.add_argument("--cli-repeats", type=int, default=5, help="runs of each light command (default 5)")
    p.add_argument("--neighbour-threads", type=int, default=2, help="torch threads of the busy neighbour (default 2)")
    p.add_argument("--suite-before", default=None, help="git ref of the 'before' test suite (default: no suite)")
    p.add_argument("--parts", default="probes,cli,suite", help="what to measure (default probes,cli,suite; the "
                   "suite only with --suite-before)")
    p.add_argument("--condense-cache", type=Path, default=DEFAULT_CACHE / "startup",
                   help=f"CONDENSE_CACHE of the children (default {DEFAULT_CACHE / 'startup'})")
    p.add_argument("--out", type=Path, default=HERE / "results_startup", help="writes OUT.md and OUT.csv")
    p.add_argument("--report", action="store_true", help="measure nothing: write OUT.md again from OUT.csv")
    args = p.parse_args(argv)
    args.situations = [s for s in args.situations.split(",") if s]
    args.parts = [s for s in args.parts.split(",") if s]
    if set(args.parts) - {"probes", "cli", "suite"}:
        p.error(f"unknown part in {args.parts}; use probes, cli, suite")
    if set(args.situations) - {"idle", "busy"}:
        p.error(f"unknown situation in {args.situations}; use idle, busy")
    return args


def condense_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "condense", *args]


def measured(kind: str, cmd: list[str], env: dict[str, str], **facts) -> dict:
    print(f"  {kind}: {shlex.join(cmd[1:])[:120]}", file=sys.stderr, flush=True)
    result = run_measured(cmd, env, ROOT)
    if result["error"]:
        print(f"  FAILED {kind}: {result['error']}", file=sys.stderr)
    return {"kind": kind, **facts, **{k: v for k, v in result.items() if k != "stdout"}}


def alias_facts(name: str, env: dict[str, str]) -> tuple[Path, float]:
    """(the folder the bare script loads, MiB of the loaded float32 weights) once the alias has been probed."""
    code = ("import json, sys\nfrom condense.models import load_model\nm = load_model(sys.argv[1], device='cpu')\n"
            "print(json.dumps([m.info['gguf_cache'] or m.info['resolved'], m.info['parameters']]))")
    out = subprocess.run([sys.executable, "-c", code, name], env=env, capture_output=True, text=True, check=True)
    folder, parameters = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(folder), round(4 * int(parameters) / 2**20, 1)


def probe_rows(args: argparse.Namespace, env: dict[str, str], names: list[str], runs: Path) -> list[dict]:
    from condense.models import ALIASES
    from condense.models.gguf_cache import converted_alias_folder

    rows = []
    for name in names:
        probe = condense_cmd("probe", name, "--num-seqs", "1", "--max-length", str(args.max_length), "-q",
                             "--out", str(runs / name))
        subprocess.run(condense_cmd("models", name, "--assemble"), env=env, check=True, capture_output=True)
        shutil.rmtree(converted_alias_folder(name), ignore_errors=True)  # the first probe converts
        facts = {"alias": name, "gguf": ALIASES[name].is_gguf}
        folder = weights = None
        for situation in args.situations:
            neighbour = Neighbour(args.neighbour_threads) if situation == "busy" else None
            try:
                print(f"[{name} {situation}]", file=sys.stderr, flush=True)
                if folder is None:
                    rows.append(measured("first", probe, env, situation=situation, **facts))
                    folder, weights = alias_facts(name, env)
                bare = [sys.executable, str(HERE / "bare_load.py"), str(folder), "--max-length", str(args.max_length)]
                for _ in range(args.repeats):
                    rows.append(measured("bare", bare, env, situation=situation, **facts))
                    rows.append(measured("second", probe, env, situation=situation, **facts))
            finally:
                if neighbour:
                    neighbour.stop()
        for row in rows:
            if row["alias"] == name:
                row["weights_mb"] = weights
    return rows


def cli_rows(args: argparse.Namespace, env: dict[str, str], run: Path) -> list[dict]:
    rows = []
    for label, cli in CLI_COMMANDS.items():
        cmd = [sys.executable, "-c", "pass"] if cli is None else condense_cmd(*[str(run) if a == "RUN" else a for a in cli])
        for _ in range(args.cli_repeats):
            rows.append(measured("cli", cmd, env, command=label, situation="idle"))
    return rows


def suite_rows(args: argparse.Namespace, env: dict[str, str]) -> list[dict]:
    """The whole suite at ``--suite-before`` and here, each from an empty cache; here again, warm."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="condense-suite-") as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.suite_before], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        for label, tree, cache in (("before (cold cache)", before, "before"), ("after (cold cache)", ROOT, "after"),
                                   ("after (warm cache)", ROOT, "after")):
            child = {**env, "PYTHONPATH": str(tree), "CONDENSE_CACHE": str(Path(tmp) / cache), "HF_DATASETS_OFFLINE": "1"}
            row = run_measured([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], child, tree)
            summary = (row.pop("stdout").strip().splitlines() or [""])[-1]
            print(f"  suite {label}: {row['wall_s']:.0f} s, {summary}", file=sys.stderr, flush=True)
            rows.append({"kind": "suite", "command": label, "situation": "idle", "summary": summary, **row})
    return rows


def _median(rows: list[dict], key: str, **where):
    values = [r[key] for r in rows if all(r.get(k) == v for k, v in where.items()) and not r.get("error")]
    return statistics.median(values) if values else None


def _num(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def probe_table(rows: list[dict]) -> str:
    lines = ["| alias | situation | load avg | first wall s | first CPU s | first peak MiB | bare wall s | second wall s | "
             "**second - bare s** | bare CPU s | second CPU s | bare peak MiB | second peak MiB | weights MiB | "
             "**second peak / weights** |", "|" + "---|" * 15]
    for name in dict.fromkeys(r["alias"] for r in rows):
        for situation in dict.fromkeys(r["situation"] for r in rows if r["alias"] == name):
            sub = [r for r in rows if r["alias"] == name and r["situation"] == situation]
            loads = [r["load_before"] for r in sub]
            bare, second = _median(sub, "wall_s", kind="bare"), _median(sub, "wall_s", kind="second")
            peak, weights = _median(sub, "peak_mb", kind="second"), sub[0]["weights_mb"]
            lines.append(f"| {name} | {situation} | {min(loads):.2f}-{max(loads):.2f} | "
                         f"{_num(_median(sub, 'wall_s', kind='first'), 1)} | {_num(_median(sub, 'cpu_s', kind='first'), 1)} | "
                         f"{_num(_median(sub, 'peak_mb', kind='first'), 0)} | {_num(bare)} | {_num(second)} | "
                         f"**{_num(second - bare if bare and second else None)}** | "
                         f"{_num(_median(sub, 'cpu_s', kind='bare'))} | {_num(_median(sub, 'cpu_s', kind='second'))} | "
                         f"{_num(_median(sub, 'peak_mb', kind='bare'), 0)} | {_num(peak, 0)} | {weights:.0f} | "
                         f"**{_num(peak / weights if peak and weights else None, 3)}** |")
    return "\n".join(lines) + (
        f"\n\nTargets (issue 20): smollm2-135m second - bare <= {SECOND_OVER_BARE_S} s and second < {SECOND_WALL_S} s; "
        f"qwen2.5-coder-1.5b second < {QWEN_SECOND_S} s with peak <= {PEAK_TARGET} x its float32 weights.")


def cli_table(rows: list[dict]) -> str:
    lines = ["| command | load avg | wall s (median) | min s | max s | peak MiB |", "|" + "---|" * 6]
    for label in CLI_COMMANDS:
        sub = [r for r in rows if r.get("command") == label and not r.get("error")]
        if not sub:
            continue
        walls = [r["wall_s"] for r in sub]
        lines.append(f"| `{label}` | {min(r['load_before'] for r in sub):.2f}-{max(r['load_before'] for r in sub):.2f} | "
                     f"{statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} | "
                     f"{_num(_median(sub, 'peak_mb'), 0)} |")
    return "\n".join(lines) + f"\n\nTarget: each condense command under {CLI_TARGET_S} s."


def suite_table(rows: list[dict]) -> str:
    lines = ["| suite | load avg before/after | wall s | CPU s | result |", "|" + "---|" * 5]
    for r in rows:
        lines.append(f"| {r['command']} | {r['load_before']:.2f}/{r['load_after']:.2f} | {r['wall_s']:.0f} | "
                     f"{r['cpu_s']:.0f} | {r['summary']} |")
    return "\n".join(lines)


def installed_aliases() -> list[str]:
    from condense.models import ALIASES, alias_report

    return [name for name, alias in ALIASES.items() if alias_report(alias)["installed"]]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        import pandas as pd

        frame = pd.read_csv(args.out.with_suffix(".csv"))
        rows = [{k: v for k, v in r.items() if not (isinstance(v, float) and v != v)} for r in frame.to_dict("records")]
        write_report(args, rows, frame["command_line"].iloc[0], frame["date"].iloc[0], frame["code"].iloc[0])
        return
    command = shlex.join(["python", "benchmarks/bench_startup.py", *(sys.argv[1:] if argv is None else argv)])
    env = {**CHILD_ENV, "CONDENSE_CACHE": str(args.condense_cache), "PYTHONPATH": str(ROOT)}
    os.environ["CONDENSE_CACHE"] = str(args.condense_cache)
    names = [n for n in args.aliases.split(",") if n] or installed_aliases()
    started = datetime.datetime.now().isoformat(timespec="minutes")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="condense-startup-") as tmp:
        if "probes" in args.parts or "cli" in args.parts:  # show needs a run folder
            rows += probe_rows(args, env, names if "probes" in args.parts else names[:1], Path(tmp))
        if "cli" in args.parts:
            rows += cli_rows(args, env, Path(tmp) / names[0])
    rows += suite_rows(args, env) if args.suite_before and "suite" in args.parts else []
    import pandas as pd

    frame = pd.DataFrame(rows).assign(command_line=command, date=started, code=code_state())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    write_report(args, rows, command, started, code_state())
    failed = [r for r in rows if r.get("error")]
    if failed:
        sys.exit(f"{len(failed)} of {len(rows)} measurements failed (see {args.out.with_suffix('.csv')})")


def write_report(args: argparse.Namespace, rows: list[dict], command: str, started: str, code: str) -> None:
    kinds = {r["kind"] for r in rows}
    sections = [f"Measured {started} on {machine()}; code {code}; load average (1 min) at the start of each "
                f"measurement (`idle`: no neighbour of the benchmark's own; the machine may be shared).\n\n`{command}`"]
    if kinds & {"first", "bare", "second"}:
        sections.append(f"`condense probe ALIAS --num-seqs 1 --max-length {args.max_length}`, whole processes; "
                        f"medians (first: once):\n\n" + probe_table([r for r in rows if r["kind"] in ("first", "bare", "second")]))
    if "cli" in kinds:
        sections.append("Start-up of the light commands, idle, medians:\n\n" + cli_table([r for r in rows if r["kind"] == "cli"]))
    if "suite" in kinds:
        sections.append("The test suite (`python -m pytest -q`), before = `--suite-before`, after = this tree:\n\n"
                        + suite_table([r for r in rows if r["kind"] == "suite"]))
    text = "\n\n".join(sections) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
