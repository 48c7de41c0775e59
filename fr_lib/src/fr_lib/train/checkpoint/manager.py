"""The checkpoints of one folder: saved atomically (a temporary directory,
``fsync``, a rename), listed, loaded with verification and pruned to the
last N (:class:`CheckpointManager`).
"""
import errno
import json
import os
import re
import secrets
import shutil
import time

from ...utils.fileio import fsync_dir
from .store import (FORMAT_VERSION, META, CheckpointError, _fsync_file, disk_free,
                    file_sha256, read_checkpoint)

__all__ = ["CheckpointManager"]


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

