"""Atomic, checksummed training checkpoints.

A checkpoint is a directory ``<prefix>-<iteration, 9 digits>`` (for example
``ckpt-000010000``) inside a checkpoint folder, holding any set of files
(``backbone.params``, ``head.params``, ``trainer.states`` ...) and a
``meta.json`` with the training position and the size and SHA-256 of every
file. It is written as a hidden temporary directory (``.tmp-ckpt-...``) in
the same folder, every file flushed with ``fsync``, and only then renamed to
its final name, so a checkpoint directory either exists complete or does not
exist: a crash, a ``SIGKILL`` or a full disk during the save leaves the
previous checkpoints as they were (the partial temporary directory is
removed, or cleaned up by the next :class:`CheckpointManager`). Older
checkpoints are deleted only after a new one is complete (keep-last-N).

Loading checks that ``meta.json`` parses and that every listed file exists
with the recorded size and checksum, and raises :class:`CheckpointError`
naming the file otherwise.

What a checkpoint can and cannot restore
----------------------------------------
:class:`~fr_lib.train.FaceTrainer` keeps no random state that would need
saving: every draw is a function of the run's seed and position. The data
order and mirror flips come from ``numpy.random.default_rng`` seeded with
``(seed, epoch, batch)``, the trainer's own draws (Partial FC's sampling)
from ``SeedSequence(seed, spawn_key=(iteration, stream))``, and MXNet's
generators, which have no API to read their state, are reseeded from
``(seed, iteration)`` before every step (:func:`step_seed`), which makes
dropout and any other MXNet randomness a function of the iteration. A
resumed run therefore sees the same batches, samples and random masks as an
uninterrupted one, and the trainer never reads or sets NumPy's or Python's
global generators. :func:`rng_state` / :func:`set_rng_state` save and
restore those global states for code that does rely on them.
"""
import errno
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import socket
import time

import numpy as np

from ..utils.fileio import fsync_dir, pid_alive

__all__ = ["CheckpointError", "RunDirectoryError", "Checkpoint", "CheckpointManager",
           "RunLock", "read_checkpoint", "rng_state", "set_rng_state", "step_seed",
           "file_sha256", "disk_free"]

logger = logging.getLogger("fr_lib")

META = "meta.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or truncated, or could not be written."""


class RunDirectoryError(CheckpointError):
    """A run directory cannot be used: it holds another run, another process
    is writing to it, or it cannot be written (a full disk)."""


def disk_free(path):
    """``'<n> bytes free on the file system of <folder>'`` for error messages."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        st = os.statvfs(folder)
        return f"{st.f_bavail * st.f_frsize} bytes free on the file system of {folder}"
    except (OSError, AttributeError):
        return f"free space of {folder} unknown"


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


def file_sha256(path, chunk=1 << 20):
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state():
    """The global NumPy and Python random states as JSON-serialisable data.

    Returns
    -------
    dict
        ``{'numpy': [...], 'python': [...]}``; give it to :func:`set_rng_state`.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def set_rng_state(state):
    """Restore the states saved by :func:`rng_state`.

    Parameters
    ----------
    state : dict
        As returned by :func:`rng_state` (after a JSON round trip).
    """
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def step_seed(seed, iteration):
    """The MXNet seed used for step ``iteration`` of a run seeded with ``seed``.

    A fixed hash of both numbers into ``[0, 2**31)``, so that neighbouring
    seeds and iterations give unrelated streams.

    Parameters
    ----------
    seed, iteration : int

    Returns
    -------
    int
    """
    ss = np.random.SeedSequence([int(seed), int(iteration)])
    return int(ss.generate_state(1, np.uint32)[0] >> 1)


class Checkpoint:
    """A verified checkpoint directory.

    Attributes
    ----------
    path : str
        The checkpoint directory.
    iteration : int
    meta : dict
        Everything stored in ``meta.json`` (``meta['state']`` is what the
        caller passed to :meth:`CheckpointManager.save`).
    """

    def __init__(self, path, meta):
        self.path, self.meta = path, meta
        self.iteration = int(meta["iteration"])

    @property
    def state(self):
        """The caller's state dict saved with the checkpoint."""
        return self.meta.get("state", {})

    def file(self, name):
        """Full path of the stored file ``name``.

        Raises
        ------
        CheckpointError
            When the checkpoint has no such file.
        """
        if name not in self.meta.get("files", {}):
            raise CheckpointError(f"{self.path}: the checkpoint has no file {name!r} "
                                  f"(it has {sorted(self.meta.get('files', {}))})")
        return os.path.join(self.path, name)

    def __repr__(self):
        return f"Checkpoint({self.path!r}, iteration={self.iteration})"


def read_checkpoint(path, verify=True):
    """Read and verify the checkpoint directory ``path``.

    Parameters
    ----------
    path : str
    verify : bool
        Check the size and SHA-256 of every file (reads them all once).

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        Naming the file that is missing, unreadable, truncated or corrupt.
    """
    meta_path = os.path.join(path, META)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    try:
        with open(meta_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; {path} is not a complete "
                              "checkpoint") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: corrupt or truncated ({err})") from None
    if not isinstance(meta, dict) or "iteration" not in meta or "files" not in meta:
        raise CheckpointError(f"{meta_path}: not a checkpoint description (needs "
                              "'iteration' and 'files')")
    for name, info in meta["files"].items():
        fpath = os.path.join(path, name)
        if not os.path.isfile(fpath):
            raise CheckpointError(f"{fpath}: missing from the checkpoint")
        if not verify:
            continue
        size = os.path.getsize(fpath)
        if size != info["size"]:
            raise CheckpointError(
                f"{fpath}: {size} bytes, but the checkpoint recorded {info['size']} "
                f"({'truncated' if size < info['size'] else 'altered'} file)")
        digest = file_sha256(fpath)
        if digest != info["sha256"]:
            raise CheckpointError(f"{fpath}: checksum mismatch (sha256 {digest[:12]}..., "
                                  f"recorded {info['sha256'][:12]}...): the file is corrupt")
    return Checkpoint(path, meta)


class CheckpointManager:
    """Save, list, load and prune the checkpoints of one folder.

    Parameters
    ----------
    directory : str
        Folder holding the checkpoint directories (created if needed).
    prefix : str, default 'ckpt'
        Checkpoints are named ``<prefix>-<iteration:09d>``; managers with
        different prefixes (``'ckpt'``, ``'best'``) can share a folder.
    keep_last : int or None, default 3
        How many checkpoints to keep (None: all). Older ones are deleted only
        after a new one has been written completely.
    clean : bool, default True
        Remove the temporaries of saves killed midway now; a caller that
        must first lock the folder (:class:`RunLock`) passes False and calls
        :meth:`remove_stale_temporaries` once it holds the lock.
    readonly : bool, default False
        Only list and load (``fr-eval``, ``fr-export``): the folder is
        neither created nor cleaned of a running save's temporaries, and
        :meth:`save` refuses.

    Examples
    --------
    >>> manager = CheckpointManager('runs/exp1/checkpoints')
    >>> manager.save(100, {'net.params': net.save_parameters}, {'epoch': 2})
    >>> ckpt = manager.load()          # the newest one, verified
    >>> net.load_parameters(ckpt.file('net.params'))
    """

    def __init__(self, directory, prefix="ckpt", keep_last=3, clean=True,
                 readonly=False):
        if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ValueError(f"prefix must be letters, digits or '_', got {prefix!r}")
        if keep_last is not None and (int(keep_last) != keep_last or keep_last < 1):
            raise ValueError(f"keep_last must be None or an integer >= 1, got {keep_last!r}")
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.prefix = prefix
        self.keep_last = keep_last
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+)")
        self.readonly = bool(readonly)
        if self.readonly:
            return
        os.makedirs(self.directory, exist_ok=True)
        if clean:
            self.remove_stale_temporaries()

    def remove_stale_temporaries(self):
        """Remove what a process killed during a save left (never a complete
        checkpoint); only safe while no other process saves into the folder."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith(f".tmp-{self.prefix}-"):
                shutil.rmtree(path, ignore_errors=True)
            elif name.endswith(".old") and self._pattern.fullmatch(name[:-4]):
                # killed while replacing a checkpoint of the same iteration
                if os.path.exists(path[:-4]):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.rename(path, path[:-4])

    def path_for(self, iteration):
        """Directory name of the checkpoint at ``iteration``."""
        return os.path.join(self.directory, f"{self.prefix}-{int(iteration):09d}")

    def list(self):
        """Checkpoint directories present, oldest first (not verified).

        Returns
        -------
        list of (int, str)
            ``(iteration, path)`` pairs.
        """
        found = []
        if self.readonly and not os.path.isdir(self.directory):
            return found
        for name in os.listdir(self.directory):
            m = self._pattern.fullmatch(name)
            if m and os.path.isdir(os.path.join(self.directory, name)):
                found.append((int(m.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def latest(self):
        """Path of the newest checkpoint, or None when there is none."""
        found = self.list()
        return found[-1][1] if found else None

    def save(self, iteration, files, state=None):
        """Write a checkpoint atomically; returns its path.

        Parameters
        ----------
        iteration : int
            Completed training iterations; names the directory.
        files : dict
            ``name -> writer``: ``writer(path)`` writes the file at ``path``
            (e.g. ``net.save_parameters`` or ``trainer.save_states``), or
            ``name -> bytes``.
        state : dict, optional
            JSON-serialisable training state stored in ``meta.json``.

        Returns
        -------
        str

        Raises
        ------
        CheckpointError
            When anything fails (a writer, a full disk): the partial
            temporary directory is removed, the previous checkpoints are
            untouched, and the original exception is chained.
        """
        if self.readonly:
            raise CheckpointError(f"{self.directory}: opened read-only, cannot save")
        final = self.path_for(iteration)
        # os.mkdir, not tempfile.mkdtemp: the directory keeps the umask's
        # permissions after the rename (mkdtemp makes it 0700)
        tmp = os.path.join(self.directory, f".tmp-{self.prefix}-{int(iteration):09d}-"
                                           f"{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.makedirs(self.directory, exist_ok=True)
            os.mkdir(tmp)
        except OSError as err:
            raise CheckpointError(
                f"could not write checkpoint {final}: cannot create {tmp} "
                f"({type(err).__name__}: {err}; {disk_free(self.directory)}); the "
                f"previous checkpoints are intact: {self._names()}") from err
        try:
            meta = {"format": FORMAT_VERSION, "iteration": int(iteration),
                    "time": time.time(), "files": {}, "state": state or {}}
            for name, writer in files.items():
                if os.sep in name or name in (META, "", ".", ".."):
                    raise ValueError(f"bad checkpoint file name {name!r}")
                fpath = os.path.join(tmp, name)
                if isinstance(writer, (bytes, bytearray)):
                    with open(fpath, "wb") as f:
                        f.write(writer)
                else:
                    writer(fpath)
                if not os.path.isfile(fpath):
                    raise CheckpointError(f"the writer of {name!r} did not create {fpath}")
                _fsync_file(fpath)
                meta["files"][name] = {"size": os.path.getsize(fpath),
                                       "sha256": file_sha256(fpath)}
            text = json.dumps(meta, indent=1, sort_keys=True)
            with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            if os.path.exists(final):  # re-saving an iteration (e.g. after resume)
                old = final + ".old"
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
            fsync_dir(self.directory)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            space = f"; {disk_free(self.directory)}" \
                if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) \
                else ""
            raise CheckpointError(
                f"could not write checkpoint {final} ({type(err).__name__}: {err}"
                f"{space}); the previous checkpoints are intact: {self._names()}") from err
        self._prune()
        return final

    def _names(self):
        return [os.path.basename(p) for _, p in self.list()] or "none"

    def _prune(self):
        if self.keep_last is None:
            return
        for _, path in self.list()[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path=None, verify=True):
        """Read and verify a checkpoint (default: the newest).

        Parameters
        ----------
        path : str, optional
            A checkpoint directory; default :meth:`latest`.
        verify : bool
            Check sizes and checksums.

        Returns
        -------
        Checkpoint

        Raises
        ------
        CheckpointError
            When there is no checkpoint, or it is corrupt; the message names
            the bad file and the older checkpoints that remain.
        """
        if path is None:
            path = self.latest()
            if path is None:
                raise CheckpointError(f"{self.directory}: no {self.prefix}-* checkpoint")
        try:
            return read_checkpoint(path, verify)
        except CheckpointError as err:
            older = [p for _, p in self.list() if p != os.path.abspath(path)]
            hint = (f"; older checkpoints: {[os.path.basename(p) for p in older]} "
                    f"(pass one of them as resume=...)") if older else ""
            raise CheckpointError(f"{err}{hint}") from None

    def load_latest_valid(self):
        """The newest checkpoint that verifies, skipping corrupt ones.

        Returns
        -------
        (Checkpoint or None, list of str)
            The checkpoint (None if none verifies) and the error messages of
            the newer ones that were skipped.
        """
        skipped = []
        for _, path in reversed(self.list()):
            try:
                return read_checkpoint(path), skipped
            except CheckpointError as err:
                skipped.append(str(err))
        return None, skipped

