"""The processes of a cluster, one process group each: started so that they die
with the launcher (:func:`_child_setup`), stopped as whole groups with a grace
period (:func:`_stop`), their output relayed and timed (:func:`_relay`), and
their state read from ``/proc`` for error messages.
"""
import os
import signal
import subprocess
import sys
import time


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

