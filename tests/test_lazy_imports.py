"""Commands that need no model import no model library: ``condense --help``, ``show``, ``models`` and
``paper table`` run without importing torch or transformers (checked in the command's own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import condense

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "safetensors", "tokenizers", "scipy", "matplotlib")

# runs the real entry point, then reports what the process imported, how many objects the command
# froze before main's freeze for the exit (``frozen``), and how many after it (``frozen_at_exit``)
SCRIPT = """
import contextlib, gc, json, sys
import condense.cli.app as app
from condense.cli import main
report, sys.argv = sys.argv[1], ["condense", *sys.argv[2:]]
seen, for_exit = {}, app.frozen_for_exit

@contextlib.contextmanager
def recorded():
    with for_exit():
        try:
            yield
        finally:
            seen["frozen"] = gc.get_freeze_count()

app.frozen_for_exit = recorded
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code or 0
with open(report, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules), "frozen": seen["frozen"],
               "frozen_at_exit": gc.get_freeze_count(), "collector_on": gc.isenabled()}, f)
"""


@pytest.fixture(scope="module")
def run_folder(tiny_gpt2, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lazy") / "run"
    condense.probe(str(tiny_gpt2), num_seqs=2, max_length=16, quiet=True).save(folder, heatmap=False)
    return folder


def imports_of(args: list[str], tmp_path: Path) -> tuple[dict, str]:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(report), *args], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(report.read_text()), p.stdout


@pytest.mark.parametrize("args, shows", [
    (["--help"], "Commands:"),
    (["show", "RUN"], "mean_cos"),
    (["models"], "smollm2-135m"),
    (["models", "--json"], '"alias"'),
    (["paper", "table"], "spearman"),
])
def test_light_commands_import_no_model_library(args, shows, run_folder, tmp_path):
    report, out = imports_of([str(run_folder) if a == "RUN" else a for a in args], tmp_path)
    assert report["code"] == 0 and shows in out
    loaded = {m.split(".")[0] for m in report["modules"]}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_importing_condense_imports_only_what_a_name_needs(tmp_path):
    code = ("import json, sys, condense, condense.models, condense.training, condense.dispersion, condense.reproduce\n"
            "before = sorted(sys.modules)\n"
            "condense.training.finetune\n"
            "print(json.dumps({'before': before, 'after': sorted(sys.modules),"
            " 'finetune': type(condense.training.finetune).__name__}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    found = json.loads(p.stdout)
    assert {m.split(".")[0] for m in found["before"]}.isdisjoint({"torch", "transformers", "numpy", "pandas"})
    assert "torch" in found["after"] and found["finetune"] == "function"  # first use imports it


def test_a_submodule_named_like_an_export_does_not_hide_it():
    import condense.training.finetune  # noqa: F401  (the submodule)
    from condense.training import finetune

    assert callable(finetune) and finetune.__module__ == "condense.training.finetune"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        condense.training.no_such_name  # noqa: B018


def test_a_probe_imports_neither_scipy_nor_seaborn(tiny_gpt2, tmp_path):
    """Each costs a probe's start-up most of a second (scipy.stats 0.6 s, seaborn 1.2 s here); transformers'
    own import of scipy.optimize for some models is the bare load's cost too."""
    report, _ = imports_of(["probe", str(tiny_gpt2), "--num-seqs", "2", "--max-length", "16", "-q",
                            "--out", str(tmp_path / "run")], tmp_path)
    assert report["code"] == 0 and (tmp_path / "run" / "heatmap.png").exists()
    unwanted = {m for m in report["modules"] if m.startswith(("scipy.stats", "seaborn"))}
    assert not unwanted, sorted(unwanted)[:5]


def test_the_cli_freezes_its_start_up_objects_once_a_probe_has_imported_them(tiny_gpt2, run_folder, tmp_path):
    """Full collections during start-up walked every object torch and transformers made (over a
    second of a short probe here, benchmarks/gc_pauses.py); frozen, later ones do not."""
    report, _ = imports_of(["probe", str(tiny_gpt2), "--num-seqs", "2", "--max-length", "16", "-q",
                            "--out", str(tmp_path / "run")], tmp_path)
    assert report["code"] == 0 and report["collector_on"]
    assert report["frozen"] > 100_000  # torch and transformers alone make more
    light, _ = imports_of(["show", str(run_folder)], tmp_path)
    assert light["code"] == 0 and light["collector_on"] and light["frozen"] == 0  # nothing heavy, nothing frozen
    # then main freezes what the command made, so the exit's collections walk nothing
    assert report["frozen_at_exit"] > report["frozen"] and light["frozen_at_exit"] > 10_000


def test_a_command_run_in_someone_elses_process_freezes_nothing(tiny_gpt2, tmp_path):
    import gc

    from click.testing import CliRunner

    from condense.cli import commands  # noqa: F401  (registers the subcommands)
    from condense.cli.app import cli

    frozen_before = gc.get_freeze_count()
    result = CliRunner().invoke(cli, ["probe", str(tiny_gpt2), "--num-seqs", "2", "--max-length", "16", "-q",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == frozen_before and gc.isenabled()
