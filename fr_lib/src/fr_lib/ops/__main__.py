"""``python -m fr_lib.ops [--force]``: build the native operators and report
(the same as ``python -m fr_lib.native build``)."""
import argparse
import sys
import time

from . import NativeBuildError, build, library_path, load, source_path


def main(argv=None, prog="python -m fr_lib.ops"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Build fr_lib's native CPU operators (cached; "
        "FR_LIB_NATIVE_DIR moves the cache, FR_LIB_ISA=avx512|avx2|generic "
        "builds one clone only) and load them once to check.")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if a cached library or a cached "
                             "build failure exists")
    parser.add_argument("--verbose", action="store_true",
                        help="print the compiler commands")
    args = parser.parse_args(argv)
    print(f"source:  {source_path()}")
    start = time.perf_counter()
    try:
        path = build(force=args.force, verbose=args.verbose)
    except NativeBuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    print(f"library: {path}")
    ok = load()
    print(f"loaded:  {ok} ({time.perf_counter() - start:.1f} s)")
    return 0 if ok and path == library_path() else 1


if __name__ == "__main__":
    sys.exit(main())
