"""Start a parameter-server cluster for ``kvstore='dist_sync'`` on one machine.

MXNet's distributed kvstore needs three kinds of process, told apart by
environment variables: one *scheduler*, which introduces the others; one or
more *servers*, which hold the weights and sum the workers' gradients; and the
*workers*, which run the training script. A process that imports ``mxnet``
with ``DMLC_ROLE=server`` or ``scheduler`` becomes that role and never returns
to the script, so a server is simply ``python -c "import mxnet"``.

:func:`launch_local` starts all of them on 127.0.0.1 (what the book and the
tests do); on a cluster the same variables are set on each machine, with
``DMLC_PS_ROOT_URI`` the scheduler's address (see the appendix "recipes").

Command line::

    python -m fr_lib.train.launch -n 2 -s 1 -- python train.py --kvstore dist_sync

Every process of the cluster runs in its own process group, and the
launcher keeps their ids: when the launcher is stopped (SIGTERM, SIGINT /
Ctrl-C, or an error) it forwards SIGTERM to every group (the workers' own
children included), waits ``grace`` seconds and then SIGKILLs what is left,
so no scheduler, server or worker outlives it (on Linux they also receive
SIGTERM if the launcher itself is SIGKILLed). A worker that makes no
progress is detected by a heartbeat: progress is any output of the worker
on stdout/stderr (the launcher relays it) or a touch of the file named by
its ``FR_HEARTBEAT_FILE`` variable (:func:`heartbeat`; ``fr-train`` does
this after its steps, at most every 5 s); after
``heartbeat_timeout`` seconds without either (default 1800; 0 turns the
check off) the cluster is stopped with :class:`LaunchError` naming the
worker and its state (e.g. stopped by SIGSTOP).
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["launch_local", "cluster_env", "free_port", "heartbeat", "LaunchError",
           "HEARTBEAT_TIMEOUT"]

#: Seconds without output or heartbeat after which a worker counts as stuck.
HEARTBEAT_TIMEOUT = 1800.0


class LaunchError(RuntimeError):
    """A worker failed or the cluster did not finish in time."""


def free_port(host="127.0.0.1"):
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cluster_env(role, num_workers, num_servers, port, host="127.0.0.1",
                base=None):
    """The ``DMLC_*`` variables for one process of the cluster.

    Parameters
    ----------
    role : {'scheduler', 'server', 'worker'}
    num_workers, num_servers : int
    port : int
        The scheduler's port.
    host : str
        The scheduler's address.
    base : dict or None
        Environment to start from (default: a copy of ``os.environ``).

    Returns
    -------
    dict
    """
    if role not in ("scheduler", "server", "worker"):
        raise ValueError(f"role must be scheduler, server or worker, got {role!r}")
    env = dict(os.environ if base is None else base)
    env.update({
        "DMLC_ROLE": role,
        "DMLC_PS_ROOT_URI": host,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_WORKER": str(num_workers),
        "DMLC_NUM_SERVER": str(num_servers),
        # ps-lite binds to this interface; loopback keeps a laptop's
        # firewall out of the way
        "DMLC_NODE_HOST": host,
    })
    # one thread per process: several processes share the cores
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def heartbeat():
    """Tell the launcher that this worker makes progress.

    Touches the file named by ``FR_HEARTBEAT_FILE`` (set by
    :func:`launch_local` for each worker); does nothing outside a launched
    cluster. Call it from a training loop that may stay silent for longer
    than the heartbeat timeout (any output on stdout/stderr counts too).
    """
    path = os.environ.get("FR_HEARTBEAT_FILE")
    if path:
        try:
            with open(path, "a"):
                os.utime(path)
        except OSError:
            pass


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # looked up here: the child must not import after fork


def _child_setup():  # pragma: no cover - runs in the child before exec
    os.setsid()  # its own process group: signalled as a whole, not by a terminal
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM if the launcher dies


def _signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(procs, grace=10.0):
    """SIGTERM every process group (SIGCONT too, so stopped ones can act on it),
    wait up to ``grace`` seconds, then SIGKILL the groups."""
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGTERM)
            _signal_group(p, signal.SIGCONT)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        # also the group's other members (a worker's data-loading children)
        _signal_group(p, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait()


def _relay(src, dst, worker, last_seen):
    """Copy a worker's output to ``dst`` and note when it last said something."""
    fd = src.fileno()
    if dst == subprocess.DEVNULL:
        dst = None
    if isinstance(dst, int):  # a file descriptor
        out = dst
    else:
        try:
            dst.flush()
            out = dst.fileno()
        except (AttributeError, OSError, ValueError):  # e.g. pytest's captured stdout
            out = None
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        last_seen[worker] = time.monotonic()
        try:
            if out is not None:
                os.write(out, chunk)
            elif dst is not None:
                dst.write(chunk.decode("utf-8", "replace"))
                dst.flush()
        except Exception:  # noqa: BLE001 - keep draining the pipe whatever happens
            out = dst = None
    src.close()


def _state(pid):
    """The process state letter from /proc (Linux), e.g. 'T' when stopped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


_STATES = {"T": "stopped (SIGSTOP?)", "t": "stopped by a debugger",
           "D": "in uninterruptible I/O", "Z": "a zombie", "S": "sleeping",
           "R": "running"}


def launch_local(command, num_workers=2, num_servers=1, port=None, env=None,
                 timeout=None, cwd=None, stdout=None, stderr=None,
                 heartbeat_timeout=HEARTBEAT_TIMEOUT, grace=10.0):
    """Run ``command`` as ``num_workers`` workers of a local ``dist_sync`` cluster.

    Parameters
    ----------
    command : list of str
        The worker command, e.g. ``[sys.executable, 'train.py']``. Each
        worker sees ``DMLC_ROLE=worker``; ``mx.kv.create('dist_sync').rank``
        tells them apart.
    num_workers, num_servers : int
        At least 1 each.
    port : int or None
        Scheduler port (default: a free one).
    env : dict or None
        Extra environment variables for every process.
    timeout : float or None
        Seconds to wait for the workers; on expiry everything is stopped and
        :class:`LaunchError` raised.
    cwd : str or None
        Working directory of every process.
    stdout, stderr : file, file descriptor, ``subprocess.DEVNULL`` or None
        Where the workers' output is relayed (default: this process's
        stdout and stderr). The scheduler's and servers' output is
        discarded unless one of them fails.
    heartbeat_timeout : float or None
        Seconds a worker may go without output and without touching its
        ``FR_HEARTBEAT_FILE`` (:func:`heartbeat`) before the cluster is
        stopped with :class:`LaunchError`; 0 or None: no check.
    grace : float
        Seconds the processes get between SIGTERM and SIGKILL when the
        cluster is stopped.

    Returns
    -------
    list of int
        The workers' exit codes (all 0, otherwise :class:`LaunchError`).

    Raises
    ------
    LaunchError
        A worker exited with a non-zero code, the scheduler or a server died
        early, a worker made no progress for ``heartbeat_timeout`` seconds,
        or ``timeout`` passed. The message names the process (and includes
        the tail of a helper's output).

    Notes
    -----
    Whatever ends the call (a return, an error, ``KeyboardInterrupt`` or
    any other exception raised from a signal handler), every process of the
    cluster is stopped and waited for before it returns.
    """
    if int(num_workers) < 1 or int(num_servers) < 1:
        raise ValueError(f"num_workers and num_servers must be >= 1, got "
                         f"{num_workers} and {num_servers}")
    if isinstance(command, str):
        raise TypeError("command must be a list of arguments, e.g. "
                        "[sys.executable, 'train.py']")
    if heartbeat_timeout is not None and heartbeat_timeout < 0:
        raise ValueError(f"heartbeat_timeout must be >= 0, got {heartbeat_timeout}")
    port = port or free_port()
    extra = dict(env or {})
    base = dict(os.environ)
    base.update(extra)
    helpers, workers, logs, threads = [], [], [], []
    import tempfile
    beat_dir = tempfile.mkdtemp(prefix="fr-launch-")
    beats = [os.path.join(beat_dir, f"worker-{i}") for i in range(num_workers)]
    start = time.monotonic()
    last_seen = [start] * num_workers
    sinks = (stdout if stdout is not None else sys.stdout,
             stderr if stderr is not None else sys.stderr)
    try:
        try:
            for role, count in (("scheduler", 1), ("server", num_servers)):
                for i in range(count):
                    log = tempfile.TemporaryFile()
                    logs.append((f"{role} {i}", log))
                    helpers.append(subprocess.Popen(
                        [sys.executable, "-c", "import mxnet"], cwd=cwd,
                        env=cluster_env(role, num_workers, num_servers, port, base=base),
                        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_child_setup))
            for i in range(num_workers):
                wenv = cluster_env("worker", num_workers, num_servers, port, base=base)
                wenv["FR_HEARTBEAT_FILE"] = beats[i]
                w = subprocess.Popen(list(command), cwd=cwd, env=wenv,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=_child_setup)
                workers.append(w)
                for src, dst in ((w.stdout, sinks[0]), (w.stderr, sinks[1])):
                    t = threading.Thread(target=_relay, args=(src, dst, i, last_seen),
                                         daemon=True)
                    t.start()
                    threads.append(t)
        except FileNotFoundError as err:
            raise LaunchError(f"cannot start the worker command {command[0]!r}: "
                              f"{err.strerror}") from None
        while True:
            codes = [w.poll() for w in workers]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                raise LaunchError(f"worker {failed[0]} exited with code "
                                  f"{codes[failed[0]]} (command: {' '.join(command)})")
            if all(c == 0 for c in codes):
                break
            dead = [name for (name, _), p in zip(logs, helpers)
                    if p.poll() not in (None, 0)]
            if dead:
                raise LaunchError(f"{dead[0]} died early:\n" + _tail(logs, dead[0]))
            now = time.monotonic()
            if timeout is not None and now - start > timeout:
                raise LaunchError(f"the cluster did not finish within {timeout} s")
            if heartbeat_timeout:
                _check_heartbeats(workers, codes, beats, last_seen, now,
                                  heartbeat_timeout)
            time.sleep(0.05)
        # servers and scheduler exit once every worker has finalised (at
        # once); what is left after ``grace`` seconds is stopped below
        deadline = time.monotonic() + grace
        for p in helpers:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return codes
    finally:
        _stop(workers + helpers, grace)
        for t in threads:
            t.join(timeout=2)
        for _, log in logs:
            log.close()
        import shutil
        shutil.rmtree(beat_dir, ignore_errors=True)


def _check_heartbeats(workers, codes, beats, last_seen, now, limit):
    stale = []
    wall = time.time()
    for i, (w, code) in enumerate(zip(workers, codes)):
        if code is not None:
            continue
        seen = last_seen[i]
        try:  # the heartbeat file's age, in the monotonic clock
            seen = max(seen, now - (wall - os.path.getmtime(beats[i])))
        except OSError:
            pass
        if now - seen > limit:
            stale.append((i, w.pid, now - seen, _state(w.pid)))
    if not stale:
        return
    # a stopped worker is the cause; the others are waiting for it
    stale.sort(key=lambda s: (s[3] not in ("T", "t"), s[0]))
    i, pid, age, state = stale[0]
    what = f"; it is {_STATES.get(state, state)}" if state else ""
    others = [str(s[0]) for s in stale[1:]]
    more = f" (silent too: worker{'s' if len(others) > 1 else ''} " \
           f"{', '.join(others)})" if others else ""
    raise LaunchError(f"worker {i} (pid {pid}) made no progress for {age:.0f} s "
                      f"(no output, no heartbeat){what}{more}; the cluster was "
                      f"stopped (heartbeat timeout {limit:g} s, --heartbeat-timeout "
                      "sets it)")


def _tail(logs, name, n=2000):
    for label, log in logs:
        if label == name:
            log.seek(0)
            return log.read().decode("utf-8", "replace")[-n:]
    return ""


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
    from ..cli import ArgumentParser, add_debug_flag
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
    from ..cli import run_main
    return run_main("python -m fr_lib.train.launch")(_main)(argv)


if __name__ == "__main__":
    # run the copy in sys.modules (its LaunchError is the one callers catch)
    from fr_lib.train.launch import main as _main_of_module
    sys.exit(_main_of_module())
