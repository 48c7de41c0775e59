#!/usr/bin/env python
"""`fr-data pairs2bin`, kept under its old name (see `fr-data pairs2bin --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/pairs2bin.py ARGS` is `fr-data pairs2bin ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"pairs2bin.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "pairs2bin"


def main(argv=None):
    """Run `fr-data pairs2bin` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="pairs2bin.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="pairs2bin.py"))
