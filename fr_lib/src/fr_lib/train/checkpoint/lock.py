"""The lock that keeps two runs from writing into one run directory
(:class:`RunLock`) and the error it raises (:class:`RunDirectoryError`).
"""
import errno
import logging
import os
import socket

from ...utils.fileio import pid_alive
from .store import CheckpointError

__all__ = ["RunDirectoryError", "RunLock"]

logger = logging.getLogger("fr_lib")


class RunDirectoryError(CheckpointError):
    """A run directory cannot be used: it holds another run, another process
    is writing to it, or it cannot be written (a full disk)."""


class RunLock:
    """An exclusive lock on a run directory, held for the life of a run.

    The lock is the file ``<directory>/.lock`` holding ``pid hostname``, kept
    open with ``fcntl.flock``: the kernel releases it when the process
    ends, however it ends (``SIGKILL`` included), so a lock file left behind
    is recognised as stale and taken over with a warning. Where ``flock``
    is not available (some network file systems) the file is created with
    ``O_EXCL`` and a lock file whose process is dead (same host) counts as
    stale.

    Parameters
    ----------
    directory : str

    Raises
    ------
    RunDirectoryError
        From :meth:`acquire` when another process (or another trainer in
        this process) holds the lock; the message names its pid and host.
    """

    NAME = ".lock"

    def __init__(self, directory):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.path = os.path.join(self.directory, self.NAME)
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def _owner(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                parts = f.read().split()
        except OSError:
            return None, None
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        return pid, (parts[1] if len(parts) > 1 else None)

    def _refuse(self, pid, host):
        who = f"process {pid}" if pid else "another process"
        if host:
            who += f" on {host}"
        raise RunDirectoryError(
            f"{self.directory} is in use: {who} is training into it (lock file "
            f"{self.path}). Wait for it to finish, stop it, or choose another out_dir; "
            f"two runs writing into one directory would mix their checkpoints and logs")

    def acquire(self):
        """Take the lock (see the class docstring); returns ``self``."""
        if self._fd is not None:
            return self
        os.makedirs(self.directory, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n".encode()
        try:
            import fcntl
        except ImportError:  # not POSIX
            fcntl = None
        for _ in range(10):
            if fcntl is None:
                return self._acquire_excl(me)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse(*self._owner())
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self._acquire_excl(me)
                raise
            try:  # the file may have been removed by its last holder meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = os.read(fd, 200).decode("utf-8", "replace").split()
            if old:
                logger.warning("fr_lib: %s: taking over a stale lock of process %s%s, "
                               "which no longer holds it (it ended without releasing "
                               "it)", self.directory, old[0],
                               f" on {old[1]}" if len(old) > 1 else "")
            self._write_owner(fd, me)
            self._fd = fd
            return self
        raise RunDirectoryError(f"{self.path}: could not take the lock (it keeps changing)")

    def _acquire_excl(self, me):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pid, host = self._owner()
                if host in (None, socket.gethostname()) and pid is not None and \
                        pid != os.getpid() and not pid_alive(pid):
                    logger.warning("fr_lib: %s: taking over the stale lock of process "
                                   "%d (no longer running)", self.directory, pid)
                    os.remove(self.path)
                    continue
                self._refuse(pid, host)
            self._write_owner(fd, me)
            self._fd = fd
            return self
        self._refuse(*self._owner())

    @staticmethod
    def _write_owner(fd, me):
        # the pid is for messages only: a full disk must not stop the lock
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, me)
        except OSError:
            pass

    def release(self):
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(fd)  # closing releases the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

