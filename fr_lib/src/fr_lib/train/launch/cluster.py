"""The cluster itself: the ``DMLC_*`` environment of each process
(:func:`cluster_env`), the worker's heartbeat (:func:`heartbeat`) and
:func:`launch_local`, which starts the scheduler, servers and workers and
watches them until they finish, fail or stop making progress.
"""
import os
import socket
import subprocess
import sys
import threading
import time

from .processes import _STATES, _child_setup, _relay, _state, _stop

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

    Book: introduced in ``chapter_training/kvstore`` (kvstore 与参数服务器).

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


def launch_local(command, num_workers=2, num_servers=1, port=None, env=None,
                 timeout=None, cwd=None, stdout=None, stderr=None,
                 heartbeat_timeout=HEARTBEAT_TIMEOUT, grace=10.0):
    """Run ``command`` as ``num_workers`` workers of a local ``dist_sync`` cluster.

    Book: introduced in ``chapter_training/kvstore`` (kvstore 与参数服务器).

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

