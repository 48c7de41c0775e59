"""``fr-data``: the data tools on the command line.

::

    fr-data synthetic OUT [--identities N --images K --val-pairs P ...]
    fr-data align IN OUT [--landmarks FILE]
    fr-data folder2rec IN OUT [--resize 112] [--plain-shuffled]
    fr-data pairs2bin PAIRS --images DIR -o OUT.bin
    fr-data inspect PATH [--contact-sheet OUT.png]
    fr-data verify-emore [FOLDER]

Each subcommand is a module of this package (``fr_lib.data.cli.folder2rec``
...: its help text, its options and its ``run(args)``); :mod:`.parser` puts
them together into one command line, and a notebook can run one in-process:
``fr_lib.data.cli.main(['folder2rec', ...])`` returns the exit status.
Expected failures (a missing file, bad input, a full disk) print one line
``fr-data <command>: error: ...`` and exit with status 2; ``--debug`` (or
``FR_DEBUG=1``) shows the traceback instead. ``verify-emore`` exits with 1
when a check fails. ``data_scripts/*.py`` in the repository are thin wrappers
around these commands.
"""
from .common import PROG, DataToolError, Terminated  # noqa: F401
from .parser import COMMANDS, build_parser, main, run_command, tool_main  # noqa: F401

__all__ = ["DataToolError", "COMMANDS", "main", "run_command", "tool_main"]
