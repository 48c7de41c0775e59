"""The run directory: one run per ``out_dir``, its log and its checkpoints.

:class:`RunDirectory` is owned by :class:`~fr_lib.train.trainer.FaceTrainer`
(``trainer.run_dir``). It knows the layout (``log.jsonl``,
``checkpoints/ckpt-*`` and ``checkpoints/best-*``), locks the directory for
the life of each ``fit()`` (:class:`~fr_lib.train.checkpoint.RunLock`),
appends to the JSON-lines log, cuts the log back to a checkpoint's iteration
when a run resumes, and moves an earlier run aside to
``<out_dir>.old-<time>``. Only rank 0 writes (``is_writer``).
"""
import json
import os
import shutil
import time

from ...utils.fileio import atomic_write_text
from ..checkpoint import (CheckpointError, CheckpointManager, RunDirectoryError,
                          RunLock, disk_free)

__all__ = ["RunDirectory"]


class RunDirectory:
    """Where a training run writes.

    Parameters
    ----------
    out_dir : str
    is_writer : bool
        This process writes (rank 0); other workers only read checkpoints.
    keep_last : int
        Periodic checkpoints kept (the best one is kept apart).

    Attributes
    ----------
    out_dir, log_path : str
    checkpoints : CheckpointManager
        ``checkpoints/ckpt-<iteration>``.
    best_checkpoints : CheckpointManager
        ``checkpoints/best-<iteration>`` (one).
    """

    def __init__(self, out_dir, is_writer=True, keep_last=3):
        self.out_dir = os.path.abspath(os.path.expanduser(out_dir))
        self.is_writer = bool(is_writer)
        ckpt_dir = os.path.join(self.out_dir, "checkpoints")
        # their stale temporaries are removed once the run holds the lock
        self.checkpoints = CheckpointManager(ckpt_dir, "ckpt", keep_last, clean=False)
        self.best_checkpoints = CheckpointManager(ckpt_dir, "best", 1, clean=False)
        self.log_path = os.path.join(self.out_dir, "log.jsonl")
        self._lock = None

    # -- the lock --------------------------------------------------------------
    def lock(self):
        """Create the directory and lock it (rank 0); remove what an
        interrupted checkpoint write left."""
        if not self.is_writer:
            return
        try:
            os.makedirs(self.checkpoints.directory, exist_ok=True)
        except OSError as err:
            raise RunDirectoryError(f"cannot create {self.checkpoints.directory} "
                                    f"({err}; {disk_free(self.out_dir)})") from err
        self._lock = RunLock(self.out_dir).acquire()
        try:
            self.checkpoints.remove_stale_temporaries()
            self.best_checkpoints.remove_stale_temporaries()
        except BaseException:
            self.unlock()
            raise

    def unlock(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the log ---------------------------------------------------------------
    def log(self, record):
        """Append ``record`` (with the time) to ``log.jsonl`` (rank 0)."""
        if not self.is_writer:
            return
        record = dict(record, time=time.time())
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise RunDirectoryError(
                f"cannot append to the training log {self.log_path} "
                f"({err.strerror or err}; {disk_free(self.log_path)}); the checkpoints "
                f"are intact: "
                f"free some space and resume") from err

    def truncate_log(self, iteration):
        """Drop log lines written after ``iteration`` by an interrupted run."""
        if not self.is_writer or not os.path.exists(self.log_path):
            return
        keep = []
        with open(self.log_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by the crash
                    continue
                if rec.get("iteration", 0) <= iteration:
                    keep.append(line if line.endswith("\n") else line + "\n")
        try:
            atomic_write_text(self.log_path, "".join(keep))
        except OSError as err:
            raise RunDirectoryError(
                f"cannot rewrite the training log {self.log_path} to resume at "
                f"iteration {iteration} ({err.strerror or err}; "
                f"{disk_free(self.log_path)}); nothing was changed: free some space "
                "and resume again") from err

    # -- what is already there -------------------------------------------------
    def resume_path(self, resume):
        """The checkpoint ``resume`` (``TrainConfig.resume``) names, or None
        (nothing to resume)."""
        r = resume
        if r is None or r is False:
            return None
        if r is True or (isinstance(r, str) and r.strip().lower() in ("true", "latest")):
            return self.checkpoints.latest()
        if isinstance(r, int):  # an iteration
            path = self.checkpoints.path_for(r)
        else:
            path = os.path.expanduser(str(r))
            if not os.path.isabs(path) and not os.path.isdir(path):
                # the name the error messages give: ckpt-000000070
                for base in (self.checkpoints.directory, self.out_dir):
                    if os.path.isdir(os.path.join(base, path)):
                        path = os.path.join(base, path)
                        break
        if not os.path.isdir(path):
            names = [os.path.basename(p) for _, p in self.checkpoints.list()]
            raise CheckpointError(
                f"resume={r!r}: no checkpoint {path} (nor "
                f"{os.path.join(self.checkpoints.directory, str(r))}); checkpoints in "
                f"{self.checkpoints.directory}: {names or 'none'}")
        return os.path.abspath(path)

    def previous_run(self):
        """What an earlier run left in ``out_dir`` (descriptions; empty: nothing)."""
        found = []
        if os.path.isfile(self.log_path):
            records = 0
            try:
                with open(self.log_path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        try:
                            records += isinstance(json.loads(line), dict)
                        except ValueError:
                            pass
            except OSError:
                records = -1
            if records:
                found.append(f"log.jsonl ({records if records > 0 else 'unreadable'} "
                             "records)")
        names = [os.path.basename(p) for m in (self.checkpoints, self.best_checkpoints)
                 for _, p in m.list()]
        if names:
            found.append(f"checkpoints {', '.join(sorted(names))}")
        return found

    def move_aside(self, paths):
        """Move ``paths`` (inside ``out_dir``) to a new ``<out_dir>.old-<time>``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = f"{self.out_dir}.old-{stamp}"
        k = 1
        while os.path.exists(target):
            target = f"{self.out_dir}.old-{stamp}-{k}"
            k += 1
        for path in paths:
            dest = os.path.join(target, os.path.relpath(path, self.out_dir))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(path, dest)
        return target

    @property
    def best_path(self):
        """Parameters file of the best backbone so far, or None."""
        latest = self.best_checkpoints.latest()
        return os.path.join(latest, "backbone.params") if latest else None
