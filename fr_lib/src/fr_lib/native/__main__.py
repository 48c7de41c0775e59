"""``python -m fr_lib.native build [--force] [--verbose]``: build fr_lib's
native CPU operators (cached) and load them once to check."""
import sys

from ..ops.__main__ import main as _build_main


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "build":
        print("usage: python -m fr_lib.native build [--force] [--verbose]",
              file=sys.stderr)
        return 2
    return _build_main(argv[1:], prog="python -m fr_lib.native build")


if __name__ == "__main__":
    sys.exit(main())
