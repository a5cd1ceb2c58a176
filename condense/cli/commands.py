"""Registers every subcommand on the ``condense`` group (one module per concern)."""

from condense.cli import figures, models, paper, probe, sweep, train  # noqa: F401
