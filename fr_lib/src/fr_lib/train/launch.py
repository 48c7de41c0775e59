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
"""
import argparse
import os
import socket
import subprocess
import sys
import time

__all__ = ["launch_local", "cluster_env", "free_port", "LaunchError"]


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


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(command, num_workers=2, num_servers=1, port=None, env=None,
                 timeout=None, cwd=None, stdout=None, stderr=None):
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
    stdout, stderr : file or None
        Where the workers' output goes (default: inherited). The scheduler's
        and servers' output is discarded unless a worker fails.

    Returns
    -------
    list of int
        The workers' exit codes (all 0, otherwise :class:`LaunchError`).

    Raises
    ------
    LaunchError
        A worker exited with a non-zero code, the scheduler or a server died
        early, or ``timeout`` passed. The message names the process and
        includes the tail of its output.
    """
    if int(num_workers) < 1 or int(num_servers) < 1:
        raise ValueError(f"num_workers and num_servers must be >= 1, got "
                         f"{num_workers} and {num_servers}")
    if isinstance(command, str):
        raise TypeError("command must be a list of arguments, e.g. "
                        "[sys.executable, 'train.py']")
    port = port or free_port()
    extra = dict(env or {})
    base = dict(os.environ)
    base.update(extra)
    helpers = []
    logs = []
    import tempfile
    try:
        for role, count in (("scheduler", 1), ("server", num_servers)):
            for i in range(count):
                log = tempfile.TemporaryFile()
                logs.append((f"{role} {i}", log))
                helpers.append(subprocess.Popen(
                    [sys.executable, "-c", "import mxnet"], cwd=cwd,
                    env=cluster_env(role, num_workers, num_servers, port, base=base),
                    stdout=log, stderr=subprocess.STDOUT))
        workers = [subprocess.Popen(
            list(command), cwd=cwd, stdout=stdout, stderr=stderr,
            env=cluster_env("worker", num_workers, num_servers, port, base=base))
            for _ in range(num_workers)]
    except BaseException:
        _stop(helpers)
        raise
    start = time.time()
    try:
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
            if timeout is not None and time.time() - start > timeout:
                raise LaunchError(f"the cluster did not finish within {timeout} s")
            time.sleep(0.05)
        # servers and scheduler exit once every worker has finalised
        for p in helpers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        return codes
    finally:
        _stop(workers + helpers)
        for _, log in logs:
            log.close()


def _tail(logs, name, n=2000):
    for label, log in logs:
        if label == name:
            log.seek(0)
            return log.read().decode("utf-8", "replace")[-n:]
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fr_lib.train.launch",
        description="Run a command as the workers of a local dist_sync "
                    "cluster (scheduler and servers on 127.0.0.1).")
    parser.add_argument("-n", "--num-workers", type=int, default=2)
    parser.add_argument("-s", "--num-servers", type=int, default=1)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the worker command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the worker command after --")
    try:
        launch_local(command, args.num_workers, args.num_servers, args.port,
                     timeout=args.timeout)
    except LaunchError as e:
        print(f"fr_lib.train.launch: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
