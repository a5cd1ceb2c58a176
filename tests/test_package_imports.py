"""Every module of the package imports without side effects: a tool that walks the package
(``pkgutil.walk_packages``, documentation builders) must not run the CLI or exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WALK = """
import importlib, pkgutil, sys
import condense
names = [m.name for m in pkgutil.walk_packages(condense.__path__, "condense.")]
for name in names:
    importlib.import_module(name)
print("imported", len(names), "condense.__main__" in names)
"""


def test_every_module_imports_without_running_the_cli():
    # a fresh process: importing everything (ray, peft, the CLI) must not leak into the suite's own process
    p = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:1] == ["imported"] and p.stdout.split()[2] == "True", p.stdout + p.stderr
    assert int(p.stdout.split()[1]) > 40 and "Usage:" not in p.stdout
