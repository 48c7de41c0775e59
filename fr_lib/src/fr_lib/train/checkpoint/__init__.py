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
# Four parts: store.py (one checkpoint directory, its verification, the
# errors), manager.py (the checkpoints of a folder), lock.py (one run per run
# directory), rng.py (random states).
from .lock import RunDirectoryError, RunLock
from .manager import CheckpointManager
from .rng import rng_state, set_rng_state, step_seed
from .store import Checkpoint, CheckpointError, disk_free, file_sha256, read_checkpoint

__all__ = ["CheckpointError", "RunDirectoryError", "Checkpoint", "CheckpointManager",
           "RunLock", "read_checkpoint", "rng_state", "set_rng_state", "step_seed",
           "file_sha256", "disk_free"]
