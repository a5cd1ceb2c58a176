"""Registers every subcommand on the ``condense`` group (one module per concern).

``cli`` here is the group with all of them (what ``condense --help`` lists; the docs read it).
"""

from condense.cli import figures, models, paper, probe, sweep, train  # noqa: F401
from condense.cli.app import cli

__all__ = ["cli"]
