#!/usr/bin/env python
"""`fr-data synthetic`, kept under its old name (see `fr-data synthetic --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/make_synthetic.py ARGS` is `fr-data synthetic ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"make_synthetic.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "synthetic"


def main(argv=None):
    """Run `fr-data synthetic` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="make_synthetic.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="make_synthetic.py"))
