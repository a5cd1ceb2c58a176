"""Sweeps: many probes (models x corpora x settings) from one spec file, run locally or on Ray.

A spec is TOML (``.toml``) or YAML (``.yaml``/``.yml``) with these keys, all optional but at least
one run::

    models = ["smollm2-135m", "gpt2"]      # crossed with corpora and the settings grid
    corpora = ["builtin", "data/pubmed.jsonl"]   # default ["builtin"]

    [settings]            # options of every run, named as in `condense probe` (num_seqs or num-seqs)
    num_seqs = 100
    max_length = [256, 512]   # a list is a grid axis: two runs per model and corpus
    init = "random"

    [resources]           # Ray resources of every run's task (the local executor ignores them)
    num_gpus = 1
    memory = "16GiB"      # bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB

    [[runs]]              # extra runs beside the grid, each on top of [settings] and [resources]
    model = "gpt2-xl"     # required
    corpus = "builtin"    # default "builtin"
    settings = { dtype = "bfloat16", batch_size = 2 }   # lists are grid axes here too
    resources = { num_gpus = 2 }

Settings are the fields of :class:`condense.ProbeSettings` and the keyword options of
:func:`condense.probe` (``revision``, ``dtype``, ``device``, ``init``, ``init_seed``, ...).
Relative model and corpus paths are taken from the current folder, as by ``condense probe``.
Each run writes ``OUT/<model>[-random]__<corpus>`` (plus ``__<8-hex hash>`` of model, corpus and
settings when several runs would share that name) atomically. A folder that already holds a
complete run with the same model, settings and load options (:func:`condense.api.same_run`) is
skipped, and a run stopped part-way continues from its probe checkpoint, so re-running a sweep
resumes it. One run failing (status ``failed`` with a one-line error) never stops the others;
a full disk or Ctrl-C stops the sweep.
``OUT/summary.csv`` gets one row per run, in spec order (:data:`SUMMARY_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from condense.api import default_run_folder, existing_run, probe_to_folder
from condense.errors import CondenseError
from condense.probing.checkpoint import DEFAULT_CHECKPOINT_EVERY, ProbeInterrupted, checkpoint_path_for
from condense.probing.probe import ProbeSettings, probe
from condense.results import ProbeResult
from condense.results.atomic import StorageError, atomic_file

__all__ = ["Run", "SUMMARY_COLUMNS", "EXECUTORS", "load_spec", "parse_spec", "run_sweep", "execute_run",
           "summary_frame"]

SUMMARY_COLUMNS = ("model", "corpus", "status", "error", "seconds", "spearman", "kendall", "last_half_mean_cos",
                   "folder")
EXECUTORS = ("local", "ray")
_TOP_KEYS = ("models", "corpora", "settings", "resources", "runs")
_RUN_KEYS = ("model", "corpus", "settings", "resources")
_RESOURCE_KEYS = ("num_gpus", "num_cpus", "memory")
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_PROBE_FIELDS = frozenset(f.name for f in dataclasses.fields(ProbeSettings)) - {"corpus"}
# load options come from probe()'s signature, so new ones (device_map, ...) are accepted as they land
_LOAD_OPTIONS = frozenset(name for name, p in inspect.signature(probe).parameters.items()
                          if p.kind is p.KEYWORD_ONLY) - {"quiet", "checkpoint", "resume"}  # the sweep sets these
SETTING_KEYS = _PROBE_FIELDS | _LOAD_OPTIONS


@dataclasses.dataclass(frozen=True)
class Run:
    """One probe of a sweep: ``settings`` are the options given to :func:`condense.probe`
    (explicit ones only), ``resources`` the Ray task options, ``folder`` the run folder's name."""

    model: str
    corpus: str
    settings: dict[str, Any]
    resources: dict[str, Any]
    folder: str = ""

    @property
    def label(self) -> str:
        return f"{self.model} x {self.corpus}" + (f" {json.dumps(self.settings, sort_keys=True)}" if self.settings else "")


def load_spec(path: str | Path) -> list[Run]:
    """Read and validate a TOML or YAML spec file into runs; CondenseError (one line) if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CondenseError(f"sweep spec {str(path)!r} is not a file; give a .toml or .yaml file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        tomllib = _toml_module()
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise CondenseError(f"cannot parse sweep spec {str(path)!r} as TOML ({_one_line(err)})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise CondenseError("YAML sweep specs need PyYAML: pip install pyyaml (or use a .toml spec)") from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CondenseError(f"cannot parse sweep spec {str(path)!r} as YAML ({_one_line(err)})") from None
    else:
        raise CondenseError(f"sweep spec {str(path)!r} must end in .toml, .yaml or .yml")
    return parse_spec(spec, str(path))


def parse_spec(spec: Any, name: str = "spec") -> list[Run]:
    """Expand a parsed spec (the dict a TOML/YAML file gives) into validated runs, in spec order."""
    if spec is None or spec == {}:
        raise CondenseError(f"sweep spec {name!r} lists no runs; give models = [...] or [[runs]] entries")
    if not isinstance(spec, dict):
        raise CondenseError(f"sweep spec {name!r} must be a table of keys ({', '.join(_TOP_KEYS)}), not a {_kind(spec)}")
    _check_keys(spec, _TOP_KEYS, f"sweep spec {name!r}")
    settings = _settings(spec.get("settings", {}), "[settings]")
    resources = _resources(spec.get("resources", {}), "[resources]")
    models = _names(spec.get("models", []), "models")
    corpora = _names(spec.get("corpora", ["builtin"]), "corpora")
    if "corpora" in spec and not models:
        raise CondenseError("sweep spec gives corpora but no models; add models = [...]")
    runs = [Run(m, c, s, resources) for m in models for c in corpora for s in _grid(settings)]
    entries = spec.get("runs", [])
    if not isinstance(entries, list):
        raise CondenseError(f"runs in the sweep spec must be a list of tables ([[runs]]), not a {_kind(entries)}")
    for n, entry in enumerate(entries, start=1):
        where = f"[[runs]] entry {n}"
        if not isinstance(entry, dict):
            raise CondenseError(f"{where} must be a table with model, corpus, settings, resources; got a {_kind(entry)}")
        _check_keys(entry, _RUN_KEYS, where)
        model = _names([entry.get("model")], f"{where} model")[0]
        corpus = _names([entry.get("corpus", "builtin")], f"{where} corpus")[0]
        merged = {**settings, **_settings(entry.get("settings", {}), f"{where} settings")}
        extra = {**resources, **_resources(entry.get("resources", {}), f"{where} resources")}
        runs += [Run(model, corpus, s, extra) for s in _grid(merged)]
    if not runs:
        raise CondenseError(f"sweep spec {name!r} lists no runs; give models = [...] or [[runs]] entries")
    runs = [_absolute(run) for run in runs]
    for run in runs:  # bad values fail here, before any model loads
        try:
            ProbeSettings(corpus=run.corpus, **_probe_fields(run.settings)).validate()
        except (CondenseError, TypeError) as err:
            raise CondenseError(f"run {run.label}: {_one_line(err)}") from None
    return _name_folders(runs)


def run_sweep(runs: list[Run], out: str | Path, executor: str = "local", ray_address: str | None = None,
              quiet: bool = False, echo: Callable[[str], Any] = print,
              checkpoint_every: float | None = DEFAULT_CHECKPOINT_EVERY) -> list[dict[str, Any]]:
    """Run every run not finished yet into ``out/<run.folder>``; write and return the summary rows.

    ``executor``: ``local`` (one after another in this process) or ``ray`` (one task per run, with
    its resources, on the cluster at ``ray_address`` or a local instance started for the sweep).
    ``echo`` gets one progress line per run. Each running probe saves its accumulators every
    ``checkpoint_every`` seconds (0 or None: only on SIGINT/SIGTERM), so the next sweep resumes a
    run after a hard kill too. Returns one dict per run (keys :data:`SUMMARY_COLUMNS`)
    in spec order; ``out/summary.csv`` holds the same.
    """
    if executor not in EXECUTORS:
        raise CondenseError(f"bad --executor {executor!r}: use local or ray")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise CondenseError(f"--out {str(out)!r} is an existing file; give a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CondenseError(f"cannot create --out {str(out)!r}: {err.strerror}") from None
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for run in runs:
        done = existing_run(out / run.folder, run.model, corpus=run.corpus, **run.settings)
        if done is None:
            pending.append(run)
        else:
            records[run.folder] = _record(run, out / run.folder, "skipped", "", 0.0, done.trend)
            echo(f"[{len(records)}/{len(runs)}] skipped {run.folder} (finished with the same settings)")
    results = _ray_records(pending, out, ray_address, checkpoint_every) if executor == "ray" else (
        execute_run(run, str(out), quiet, checkpoint_every) for run in pending)
    try:
        for record in results:
            records[Path(record["folder"]).name] = record
            error = f": {record['error']}" if record["error"] else ""
            echo(f"[{len(records)}/{len(runs)}] {record['status']:7} {Path(record['folder']).name} "
                 f"{record['seconds']:.1f} s{error}")
    except StorageError as err:  # every later run would fail alike: stop, keep what is finished
        finished = sum(r["status"] != "failed" for r in records.values())
        raise CondenseError(f"{err}; the sweep stopped with {finished} of {len(runs)} runs finished: run it "
                            "again when there is space (finished runs are skipped, a partly done one resumes)") from None
    except ProbeInterrupted:  # Ctrl-C / SIGTERM: the run saved its checkpoint; stop the sweep, not just the run
        finished = sum(r["status"] != "failed" for r in records.values())
        current = next((r.folder for r in pending if r.folder not in records), "a run")
        raise ProbeInterrupted(f"sweep interrupted during {current} with {finished} of {len(runs)} runs finished; "
                               "run the same sweep again to continue (finished runs are skipped, this one resumes "
                               "from its checkpoint)") from None
    rows = [records[run.folder] for run in runs]
    with atomic_file(out / "summary.csv") as tmp:
        summary_frame(rows).to_csv(tmp, index=False, float_format="%.6g")
    return rows


def execute_run(run: Run, out: str, quiet: bool = True,
                checkpoint_every: float | None = DEFAULT_CHECKPOINT_EVERY) -> dict[str, Any]:
    """Probe one run into ``out/run.folder``; the summary row, status ``ok`` or ``failed``.

    A run stopped part-way (SIGINT, SIGTERM, or a hard kill after a periodic checkpoint) left
    its checkpoint at :func:`checkpoint_path_for` of the folder: the probe resumes from it. A
    checkpoint that cannot be used (other settings: the spec changed; unreadable) is deleted and
    the run starts over. Any exception becomes a ``failed`` row with a one-line error, so one bad
    model cannot stop a sweep (this is also the body of each Ray task), except a StorageError
    (full disk, quota, read-only file system), which every later run would meet too, and
    ProbeInterrupted (the user stopped the sweep): those are raised.
    """
    folder = Path(out) / run.folder
    start = time.perf_counter()
    try:
        _probe_resuming(run, folder, quiet, checkpoint_every)
        trend = ProbeResult.load(folder).trend
    except (StorageError, ProbeInterrupted):
        raise
    except Exception as err:  # noqa: BLE001  (reported per run; KeyboardInterrupt still stops the sweep)
        return _record(run, folder, "failed", _one_line(err), time.perf_counter() - start, {})
    return _record(run, folder, "ok", "", time.perf_counter() - start, trend)


def _probe_resuming(run: Run, folder: Path, quiet: bool, checkpoint_every: float | None) -> None:
    checkpoint = checkpoint_path_for(folder)
    options = dict(corpus=run.corpus, quiet=quiet, checkpoint_every=checkpoint_every, **run.settings)
    if not checkpoint.exists():
        probe_to_folder(run.model, folder, **options)
        return
    try:
        probe_to_folder(run.model, folder, resume=True, **options)
    except CondenseError as err:
        # load_checkpoint's refusals name the checkpoint file; nothing else does
        if isinstance(err, (StorageError, ProbeInterrupted)) or str(checkpoint) not in str(err):
            raise
        checkpoint.unlink(missing_ok=True)
        probe_to_folder(run.model, folder, **options)


def summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The summary table: one row per run, columns :data:`SUMMARY_COLUMNS`."""
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _toml_module():
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli is the same parser
        try:
            import tomli as tomllib
        except ImportError:
            raise CondenseError("TOML sweep specs on Python 3.10 need tomli: pip install 'condense[sweep]'") from None
    return tomllib


def _ray_records(runs: list[Run], out: Path, address: str | None,
                 checkpoint_every: float | None) -> Iterator[dict[str, Any]]:
    """Submit each run as a Ray task with its resources; yield rows as tasks finish."""
    if not runs:
        return
    try:
        import ray
    except ImportError:
        raise CondenseError("--executor ray needs Ray: pip install 'condense[sweep]' (or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        try:  # no address: Ray's own default (RAY_ADDRESS, else a new local instance)
            ray.init(address=address, **({} if address else {"include_dashboard": False}))
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise CondenseError(f"cannot start or reach Ray at {address or 'a local instance'!r} "
                                f"({_one_line(err)}); check --ray-address (e.g. auto or HOST:6379)") from None
    task = ray.remote(execute_run)
    try:
        pending = {task.options(**_ray_options(run.resources)).remote(run, str(out), True, checkpoint_every): run
                   for run in runs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as err:  # the worker died (out of memory, node lost, ...)
                if isinstance(getattr(err, "cause", None), StorageError):
                    for ref in pending:
                        ray.cancel(ref)
                    raise err.cause from None
                yield _record(run, out / run.folder, "failed", _one_line(err), 0.0, {})
    finally:
        if started:
            ray.shutdown()


def _ray_options(resources: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in resources.items() if k != "memory"}
    if "memory" in resources:
        options["memory"] = _bytes(resources["memory"])
    return options


def _record(run: Run, folder: Path, status: str, error: str, seconds: float, trend: dict) -> dict[str, Any]:
    def number(key: str) -> float | None:
        value = trend.get(key)
        return None if value is None else float(value)

    return {"model": run.model, "corpus": run.corpus, "status": status, "error": error, "seconds": round(seconds, 2),
            "spearman": number("spearman"), "kendall": number("kendall"),
            "last_half_mean_cos": number("last_half"), "folder": str(folder)}


def _settings(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CondenseError(f"{where} must be a table of probe options, not a {_kind(value)}")
    out = {}
    for key, v in value.items():
        name = str(key).replace("-", "_")
        if name not in SETTING_KEYS:
            raise CondenseError(f"unknown setting {key!r} in {where}; use probe options: {', '.join(sorted(SETTING_KEYS))}")
        values = v if isinstance(v, list) else [v]
        if not values or any(isinstance(x, (dict, list)) or x is None for x in values):
            raise CondenseError(f"bad {where} value {name} = {v!r}: give a value or a non-empty list of values")
        out[name] = v
    return out


def _resources(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CondenseError(f"{where} must be a table (num_gpus, num_cpus, memory), not a {_kind(value)}")
    _check_keys(value, _RESOURCE_KEYS, where)
    for key, v in value.items():
        if key == "memory":
            _bytes(v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise CondenseError(f"bad {where} {key} = {v!r}: give a number >= 0")
    return dict(value)


def _bytes(value: Any) -> int:
    """Bytes from an int or a string such as ``16GiB`` / ``500 MB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(value))
    unit = match and _UNITS.get((match.group(2) or "b").lower())
    if not unit or match.group(1).count(".") > 1 or float(match.group(1)) <= 0:
        raise CondenseError(f"bad memory {value!r}: give bytes or a number with a unit, e.g. 16GiB or 500MB")
    return int(float(match.group(1)) * unit)


def _grid(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued settings (a single dict when there is none)."""
    axes = [[(k, x) for x in (v if isinstance(v, list) else [v])] for k, v in settings.items()]
    return [dict(combo) for combo in itertools.product(*axes)]


def _names(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise CondenseError(f"bad {where} in the sweep spec: give a list of non-empty strings, got {value!r}")
    return list(values)


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in table if k not in allowed]
    if unknown:
        raise CondenseError(f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(allowed)}")


def _absolute(run: Run) -> Run:
    """Existing local paths made absolute: Ray workers need not share the current folder."""
    def fix(text: str) -> str:
        return str(Path(text).resolve()) if os.path.exists(text) else text

    return dataclasses.replace(run, model=fix(run.model), corpus=fix(run.corpus))


def _name_folders(runs: list[Run]) -> list[Run]:
    """Folder names; a hash of model, corpus and settings is added where names would collide."""
    bases = [default_run_folder(r.model, r.corpus, r.settings.get("init", "pretrained")).name for r in runs]
    keys = [json.dumps([r.model, r.corpus, r.settings], sort_keys=True) for r in runs]
    twice = [k for k, n in Counter(keys).items() if n > 1]
    if twice:
        raise CondenseError(f"the sweep spec lists one run twice: {json.loads(twice[0])}")
    shared = {b for b, n in Counter(bases).items() if n > 1}
    return [dataclasses.replace(r, folder=b + (f"__{hashlib.sha256(k.encode()).hexdigest()[:8]}" if b in shared else ""))
            for r, b, k in zip(runs, bases, keys)]


def _probe_fields(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k in _PROBE_FIELDS}


def _kind(value: Any) -> str:
    return type(value).__name__


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, CondenseError):
        text = f"{type(err).__name__}: {text}"
    return text[:1000]
