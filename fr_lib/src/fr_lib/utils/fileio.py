"""Atomic file writes: a crash never leaves a half-written file in place."""
import os
import tempfile

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "pid_alive"]


def fsync_dir(d):
    """Flush a directory entry (a rename) to disk where the OS allows it."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder,
    fsync and rename; the previous file stays intact if anything fails.

    The file gets the permissions an ordinary ``open()`` would give (the
    umask applied to 0o666), not ``mkstemp``'s 0o600. Returns the path.
    """
    path = os.path.abspath(os.path.expanduser(path))
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(d)
    return path


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def pid_alive(pid):
    """Whether process ``pid`` exists on this host (a lock or a temporary
    folder naming a dead process is stale). Another user's process counts as
    alive: it exists, we may just not signal it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, owned by someone else
        return True
    return True
