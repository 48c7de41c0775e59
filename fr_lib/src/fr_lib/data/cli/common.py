"""What every ``fr-data`` command shares: the program name and the errors."""

__all__ = ["PROG", "DataToolError", "Terminated", "fail", "help_parts"]

PROG = "fr-data"


class DataToolError(Exception):
    """An expected failure of a data tool: bad input, a missing file. The
    command line prints its message as one line and exits with status 2."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM or SIGHUP (``args[0]``: the
    signal number), so ``finally`` blocks remove temporary outputs before
    the process exits."""


def fail(message):
    """Stop the command with ``message`` (one line, exit status 2)."""
    raise DataToolError(message)


def help_parts(text):
    """(description, epilog) of a command's docstring-like help text."""
    head, _, rest = text.strip().partition("\n\n")
    return head, rest
