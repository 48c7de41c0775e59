#!/usr/bin/env python
"""`fr-data folder2rec`, kept under its old name (see `fr-data folder2rec --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/folder2rec.py ARGS` is `fr-data folder2rec ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"folder2rec.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "folder2rec"


def main(argv=None):
    """Run `fr-data folder2rec` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="folder2rec.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="folder2rec.py"))
