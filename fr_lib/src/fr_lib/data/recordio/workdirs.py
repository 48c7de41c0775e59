"""The temporary folders :func:`~fr_lib.data.recordio.write_face_rec` writes
into, named after their writer (host and pid), and the removal of those a
killed writer left behind (:func:`remove_stale_work_dirs`)."""
import os
import re
import shutil
import socket
import time

from ...utils.fileio import pid_alive

__all__ = ["remove_stale_work_dirs", "LEGACY_WORK_DIR_AGE"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_tag():
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _work_prefix(out_dir):
    """``.<name>.<host>-<pid>.``: the temporary folder names its writer, so a
    later run can tell a dead writer's leftovers from a live writer's."""
    return f".{os.path.basename(out_dir)}.{_host_tag()}-{os.getpid()}."


#: A temporary folder of the older form (no writer named) whose files have
#: not changed for this long is a dead writer's: a live one writes every image.
LEGACY_WORK_DIR_AGE = 3600.0


def _newest_mtime(path):
    newest = os.stat(path).st_mtime
    for d, _, files in os.walk(path):
        for f in files:
            try:
                newest = max(newest, os.stat(os.path.join(d, f)).st_mtime)
            except OSError:
                pass
    return newest


def remove_stale_work_dirs(out_dir, legacy_age=LEGACY_WORK_DIR_AGE):
    """Remove the temporary folders that a killed :func:`write_face_rec` of
    ``out_dir`` left behind (``.<name>.<host>-<pid>.*.tmp`` beside or inside
    ``out_dir``, written on this host by a process that no longer exists).

    A ``SIGKILL`` (or a power cut) gives the writer no chance to clean up; the
    next write of the same folder does it. Folders of live processes and of
    other hosts (a shared file system) are left alone. Folders of the form
    older fr_lib versions used (``.<name>.XXXXXXXX.tmp``, no writer named) are
    removed once nothing in them has changed for ``legacy_age`` seconds.

    Returns
    -------
    list of str
        The folders removed.
    """
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    base = re.escape(os.path.basename(out_dir))
    pattern = re.compile(r"\." + base
                         + r"\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
    legacy = re.compile(r"\." + base + r"\.[a-z0-9_]{8}\.tmp$")
    removed = []
    for folder in (os.path.dirname(out_dir), out_dir):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            m = pattern.match(name)
            if m:
                pid = int(m.group("pid"))
                if m.group("host") != _host_tag() or pid == os.getpid() or \
                        pid_alive(pid):
                    continue
            elif not legacy.match(name):
                continue
            try:
                if not os.path.isdir(path) or os.path.islink(path) or (
                        not m and time.time() - _newest_mtime(path) < legacy_age):
                    continue
            except OSError:
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
    return removed
