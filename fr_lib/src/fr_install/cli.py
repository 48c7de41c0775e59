"""``python -m fr_install`` (``fr-install``): check, or run the steps quietly,
write the NumPy hook's ``.pth`` and build fr_lib's native operators.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from .environment import gpu_compute_capabilities, missing
from .packages import MXNET, wanted_mxnet
from .steps import plan

__all__ = ["main"]


def _build_ops(verbose):
    """Compile fr_lib's native operators once (a line before, one after)."""
    start = time.time()
    if not verbose:  # verbose: fr_lib.ops prints its own progress lines
        print("fr_install: compiling fr_lib's native CPU operators (once, "
              "about 30-90 s on 2 cores) ...", flush=True)
    result = subprocess.run([sys.executable, "-m", "fr_lib.ops"],
                            capture_output=not verbose, text=True)
    if result.returncode == 0:
        return f"native operators built in {time.time() - start:.0f} s"
    print("fr_install: fr_lib's native operators did not build; fr_lib will "
          "use its pure-MXNet formulas (slower on CPU)", file=sys.stderr)
    return None


def _write_pth():
    """import fr_numpy_compat; fr_numpy_compat.write_pth()"""
    import fr_numpy_compat
    fr_numpy_compat.write_pth()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fr_install", description=sys.modules[__package__].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--book", action="store_true",
                       help="also every package the notebooks import + Jupyter")
    group.add_argument("--colab", action="store_true",
                       help="as --book without Jupyter, plus CJK fonts (apt-get)")
    parser.add_argument("--check", action="store_true",
                        help="install nothing; exit 1 and list what is missing")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every command and pip's output")
    parser.add_argument("--gpu-cc", action="append", default=None, metavar="X.Y",
                        help="pretend the GPUs have these compute capabilities "
                             "(repeat per GPU; 'none' for no GPU)")
    args = parser.parse_args(argv)
    mode = "colab" if args.colab else "book" if args.book else "lib"
    if args.gpu_cc is None:
        caps = gpu_compute_capabilities()
    else:
        caps = [tuple(int(v) for v in cc.split("."))
                for cc in args.gpu_cc if cc != "none"]

    if args.check:
        gaps = missing(mode, caps)
        if gaps:
            print("fr_install: missing: " + ", ".join(gaps) +
                  f"\nfix: {sys.executable} -m fr_install" +
                  ("" if mode == "lib" else f" --{mode}"), file=sys.stderr)
            return 1
        if args.verbose:
            print(f"fr_install: everything for '{mode}' is installed")
        return 0

    steps, notes = plan(caps, mode=mode)
    if args.dry_run:
        for note in notes:
            print(f"# {note}")
        for step in steps:
            print(f"$ {step.text()}")
        print(f"$ {sys.executable} -m fr_lib.ops")
        return 0
    if args.verbose:
        for note in notes:
            print(f"fr_install: {note}")
    log = tempfile.NamedTemporaryFile("w", prefix="fr_install-", suffix=".log",
                                      delete=False)
    start = time.time()
    for step in steps:
        if args.verbose:
            print(f"$ {step.text()}", flush=True)
        if step.command is None:
            step.func()
            continue
        if args.verbose:
            code = subprocess.run(step.command).returncode
        else:
            log.write(f"$ {step.text()}\n")
            log.flush()
            code = subprocess.run(step.command, stdout=log,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            where = "" if args.verbose else f" (its output: {log.name})"
            if step.soft:
                print(f"fr_install: warning: step '{step.name}' failed{where}; "
                      f"figures may lack Chinese glyphs. Run: {step.text()}",
                      file=sys.stderr)
                continue
            print(f"fr_install: step '{step.name}' failed (exit {code}){where}. "
                  f"Run: {step.text()}", file=sys.stderr)
            return 1
    log.close()
    _write_pth()
    built = _build_ops(args.verbose)
    dist, _ = wanted_mxnet(caps)
    what = [f"{dist} {MXNET}"] + (["book packages"] if mode != "lib" else [])
    if built:
        what.append(built)
    print(f"fr_install: ready ({', '.join(what)}; {time.time() - start:.0f} s)")
    if not args.verbose:
        os.remove(log.name)
    return 0
