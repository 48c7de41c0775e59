#!/usr/bin/env python
"""`fr-data verify-emore`, kept under its old name (see `fr-data verify-emore --help`).

The tool lives in the package (fr_lib.data.cli); this wrapper runs it from a
clone: `python data_scripts/verify_emore.py ARGS` is `fr-data verify-emore ARGS`.
"""
import sys

try:
    from fr_lib.data import cli
except ImportError as err:  # pragma: no cover - fr_lib not installed
    sys.exit(f"verify_emore.py needs the fr_lib package: pip install -e fr_lib "
             f"(from the repository root) ({err})")

COMMAND = "verify-emore"


def main(argv=None):
    """Run `fr-data verify-emore` in-process; an expected failure raises
    ``SystemExit('error: ...')``."""
    return cli.tool_main(COMMAND, argv, prog="verify_emore.py")


if __name__ == "__main__":
    sys.exit(cli.run_command(COMMAND, sys.argv[1:], prog="verify_emore.py"))
