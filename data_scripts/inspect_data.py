#!/usr/bin/env python
"""`fr-data inspect`, kept under its old name (see `fr-data inspect --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/inspect_data.py ARGS` is `fr-data inspect ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"inspect_data.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "inspect"


def main(argv=None):
    """Run `fr-data inspect` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="inspect_data.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="inspect_data.py"))
