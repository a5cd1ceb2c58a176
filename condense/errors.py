"""The one exception type users see as a single line on stderr (exit code 2)."""

__all__ = ["CondenseError", "CondenseWarning", "first_line"]


class CondenseError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The message is one line naming the bad value and what would work instead.
    """


class CondenseWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), for one-line errors."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
