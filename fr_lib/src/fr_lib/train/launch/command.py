"""``python -m fr_lib.train.launch``: the command line, and SIGTERM / Ctrl-C
turned into a clean stop of the whole cluster.
"""
import argparse
import signal
import sys
import threading

from .cluster import HEARTBEAT_TIMEOUT, launch_local

__all__ = ["main"]


class _Signalled(BaseException):
    """SIGTERM/SIGINT reached the launcher (stops the cluster on the way out)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    # further signals while the cluster is being stopped are ignored
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise _Signalled(signum)


def _main(argv=None):
    from ...cli import ArgumentParser, add_debug_flag
    parser = ArgumentParser(
        prog="python -m fr_lib.train.launch",
        description="Run a command as the workers of a local dist_sync "
                    "cluster (scheduler and servers on 127.0.0.1). SIGTERM or "
                    "Ctrl-C stops the whole cluster; a worker without output or "
                    "heartbeat for --heartbeat-timeout seconds stops it with an "
                    "error. Errors are one line on stderr with exit code 2.")
    parser.add_argument("-n", "--num-workers", type=int, default=2)
    parser.add_argument("-s", "--num-servers", type=int, default=1)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds the whole run may take (default: no limit)")
    parser.add_argument("--heartbeat-timeout", type=float, default=HEARTBEAT_TIMEOUT,
                        help="seconds a worker may go without output or heartbeat "
                             "(FR_HEARTBEAT_FILE) before the cluster is stopped "
                             f"(default {HEARTBEAT_TIMEOUT:g}; 0: never)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds between SIGTERM and SIGKILL when the cluster "
                             "is stopped (default 10)")
    add_debug_flag(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the worker command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the worker command after --")
    for name in ("num_workers", "num_servers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.heartbeat_timeout < 0:
        parser.error("--heartbeat-timeout must be >= 0")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        launch_local(command, args.num_workers, args.num_servers, args.port,
                     timeout=args.timeout, heartbeat_timeout=args.heartbeat_timeout,
                     grace=args.grace)
    except _Signalled as s:
        name = signal.Signals(s.signum).name
        print(f"python -m fr_lib.train.launch: {name} received; the cluster was "
              "stopped", file=sys.stderr)
        return 128 + s.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv=None):
    """Entry point of ``python -m fr_lib.train.launch`` (see ``--help``)."""
    from ...cli import run_main
    return run_main("python -m fr_lib.train.launch")(_main)(argv)

