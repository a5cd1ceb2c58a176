"""The ``condense`` command line. Bad input: one line on stderr, exit code 2, nothing on disk."""

from condense.cli.app import cli, main

__all__ = ["cli", "main"]
