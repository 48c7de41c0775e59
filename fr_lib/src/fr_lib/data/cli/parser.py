"""The ``fr-data`` command line: one parser over the commands, and how a
command runs (signals, one-line errors, exit statuses).

Each command is a module of this package (:mod:`.synthetic`, :mod:`.align`,
:mod:`.folder2rec`, :mod:`.pairs2bin`, :mod:`.inspect`, :mod:`.verify_emore`)
with its ``HELP`` text, ``SHORT`` summary, ``add_arguments(parser)`` and
``run(args)``; :data:`COMMANDS` lists them in ``fr-data --help`` order.
"""
import argparse
import os
import signal
import sys

from . import align, folder2rec, inspect, pairs2bin, synthetic, verify_emore
from .common import PROG, DataToolError, Terminated, help_parts

__all__ = ["COMMANDS", "build_parser", "main", "run_command", "tool_main"]

_MODULES = {"synthetic": synthetic, "align": align, "folder2rec": folder2rec,
            "pairs2bin": pairs2bin, "inspect": inspect,
            "verify-emore": verify_emore}

#: name -> (help text, add-arguments function, run function)
COMMANDS = {name: (m.HELP, m.add_arguments, m.run) for name, m in _MODULES.items()}

_SHORT = {name: m.SHORT for name, m in _MODULES.items()}

_EXAMPLES = """\
examples:
  fr-data synthetic out/faces_synthetic --identities 200 --images 20
  fr-data align photos/ aligned/
  fr-data folder2rec aligned/ out/my_faces --resize 112
  fr-data pairs2bin lfw/pairs.txt --images lfw_aligned/ -o out/lfw.bin
  fr-data inspect out/my_faces --contact-sheet sheet.png
  fr-data verify-emore

fr-data COMMAND --help describes a command. Errors are one line (exit status
2); --debug (or FR_DEBUG=1) shows the traceback.
"""


def _add_command(ap, name):
    text, add_args, _ = COMMANDS[name]
    add_args(ap)
    ap.add_argument("--debug", action="store_true",
                    help="show the full traceback of an error")
    return ap


def _command_parser(name, prog=None):
    text = COMMANDS[name][0]
    description, epilog = help_parts(text)
    ap = argparse.ArgumentParser(
        prog=prog or f"{PROG} {name}", description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return _add_command(ap, name)


def build_parser():
    """The ``fr-data`` argument parser (one sub-parser per command)."""
    ap = argparse.ArgumentParser(
        prog=PROG, description="Prepare face data: synthetic identities, "
        "alignment, RecordIO packing, verification pairs, inspection and checks.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", dest="debug_all", action="store_true",
                    help="show the full traceback of an error")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (text, _, _) in COMMANDS.items():
        description, epilog = help_parts(text)
        sp = sub.add_parser(name, help=_SHORT[name],
                            description=description, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_command(sp, name)
    return ap


# Exceptions a user causes (bad input, a missing file, a full disk): one line.
_EXPECTED = (DataToolError, OSError, ValueError, ImportError)


def _debug(flag):
    """``--debug`` or ``FR_DEBUG=1``: raise errors with their traceback."""
    return bool(flag) or os.environ.get("FR_DEBUG", "") not in ("", "0")


def _on_sigterm(signum, frame):
    raise Terminated(signum)


def run_command(name, argv=None, prog=None):
    """Run command ``name`` with its arguments ``argv`` as the command line
    does: expected failures print one line on stderr and return 2.

    Returns
    -------
    int
        The exit status.
    """
    if name not in COMMANDS:
        raise ValueError(f"unknown fr-data command {name!r}; the commands are: "
                         + ", ".join(COMMANDS))
    args = _command_parser(name, prog).parse_args(argv)
    return _execute(name, args, prog or f"{PROG} {name}", _debug(args.debug))


def _execute(name, args, prog, debug):
    previous = {}
    for sig in ("SIGTERM", "SIGHUP"):  # kill's default; a closed terminal
        if hasattr(signal, sig):
            try:  # only the main thread may set handlers
                previous[sig] = signal.signal(getattr(signal, sig), _on_sigterm)
            except ValueError:
                pass
    try:
        return COMMANDS[name][2](args)
    except Terminated as stop:
        if debug:
            raise
        print(f"{prog}: terminated (temporary outputs removed)", file=sys.stderr)
        return 128 + int(stop.args[0] if stop.args else signal.SIGTERM)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted (temporary outputs removed)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the point of the command line
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, _EXPECTED):
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        print(f"{prog}: internal error: {type(err).__name__}: {message} (rerun "
              "with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(getattr(signal, sig), handler)


def main(argv=None):
    """Entry point of ``fr-data`` (see ``fr-data --help``).

    Returns
    -------
    int
        0 on success, 1 when ``verify-emore`` finds a failed check, 2 on an
        error (one line on stderr; ``--debug`` raises it instead).
    """
    args = build_parser().parse_args(argv)
    debug = _debug(args.debug or args.debug_all)
    return _execute(args.command, args, f"{PROG} {args.command}", debug)


def tool_main(name, argv=None, prog=None):
    """Run command ``name`` in-process the way ``data_scripts/<tool>.py``'s
    ``main(argv)`` always has: the exit status is returned, and an expected
    failure raises ``SystemExit('error: ...')`` (so a test can match it)."""
    args = _command_parser(name, prog).parse_args(argv)
    try:
        return COMMANDS[name][2](args)
    except _EXPECTED as err:
        if args.debug:
            raise
        raise SystemExit(f"error: {' '.join(str(err).split())}") from err
