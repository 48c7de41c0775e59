"""``python -m fr_lib.ops``: build the native operators and report."""
import sys

from . import NativeBuildError, build, library_path, load, source_path


def main():
    print(f"source:  {source_path()}")
    try:
        path = build(verbose=True)
    except NativeBuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    print(f"library: {path}")
    ok = load()
    print(f"loaded:  {ok}")
    return 0 if ok and path == library_path() else 1


if __name__ == "__main__":
    sys.exit(main())
