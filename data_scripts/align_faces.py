#!/usr/bin/env python
"""`fr-data align`, kept under its old name (see `fr-data align --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/align_faces.py ARGS` is `fr-data align ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"align_faces.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "align"


def main(argv=None):
    """Run `fr-data align` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="align_faces.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="align_faces.py"))
