"""Training at scale: data parallelism, AMP, NaN guard, schedules, checkpoints.

:class:`FaceTrainer` trains ``backbone -> head -> loss`` for a fixed number of
iterations (head, loss, the loss's extra inputs and its running state are built
from the loss's contract by :mod:`fr_lib.train.objective`):

- **data parallel** over a list of contexts (GPUs, or several CPU contexts
  so the same code path runs on a laptop); gradients are summed over the
  contexts through a kvstore (``'device'``, ``'local'``), over machines
  through MXNet's parameter server (``'dist_sync'``, ``'dist_device_sync'``)
  or through Horovod (``'horovod'``, when installed);
- **mixed precision** on GPU (``amp='float16'``, ``mx.contrib.amp`` with
  dynamic loss scaling; fully connected layers, hence the cosine logits, and
  the margin loss stay float32), ``multi_precision``, element-wise and
  global-norm gradient clipping, no weight decay on BatchNorm, biases and
  PReLU slopes (``no_wd=True``);
- a **NaN/inf guard**: a step whose loss or gradient is not finite, or
  whose update makes a weight or a BatchNorm running statistic non-finite,
  changes nothing (weights, optimizer state and running statistics are
  restored) and is counted; ``max_bad_steps`` of them in a row stop
  training with :class:`NonFiniteError`. No checkpoint is written during a
  streak of bad steps, and none whose tensors are not all finite;
- **one run per directory**: ``out_dir`` is locked for the run's life
  (:class:`~fr_lib.train.checkpoint.RunLock`), and a directory that holds
  another run is refused unless ``resume`` (continue it) or ``fresh``
  (move it aside to ``<out_dir>.old-<time>``) says what to do;
- **labels are checked** on the host as each batch enters the trainer
  (integers in ``[0, num_classes)``), naming the batch and the sample;
- **iteration-based schedules** with warm-up (:mod:`fr_lib.train.schedule`)
  and a **loss warm-up**: the normalised softmax (NormFace) for the first
  ``loss_warmup_iters`` iterations, then the margin loss (gluon-face's
  recipe for hard margins);
- **checkpoints** every ``checkpoint_every`` iterations and at the end
  (parameters, optimizer state, iteration, data position, RNG states),
  written atomically (:mod:`fr_lib.train.checkpoint`); ``resume`` continues
  exactly where training stopped;
- **verification** on ``.bin`` pair sets with
  :class:`~fr_lib.metrics.VerificationEvaluator` and best-model saving, a
  callback (:class:`~fr_lib.train.callbacks.Verification`);
- a tqdm bar (loss, lr, img/s, ETA) and a JSON-lines log
  (:func:`read_log`, :func:`plot_log`).

Randomness. The trainer owns its randomness: every random draw of a run is
a function of ``TrainConfig.seed`` and the run's position, so a run is
bitwise reproducible and a resumed run continues exactly (on CPU it
reproduces the losses and weights of an uninterrupted one):

- the data order and mirror flips come from
  ``numpy.random.default_rng([seed, epoch, ...])`` inside the data source
  (:class:`ArrayBatches`, :class:`RecordBatches`);
- the trainer's own draws (Partial FC's class sampling) come from
  :meth:`FaceTrainer.rng`, a ``numpy.random.Generator`` seeded with
  ``SeedSequence(seed, spawn_key=(iteration, stream))``; the checkpoint
  records the seed (and the iteration), which is its whole state;
- NumPy's and Python's global generators (``np.random.seed``,
  ``random.seed``) are never touched: constructing, training and resuming a
  trainer leaves them as they were.

MXNet's operator randomness (parameter initialisers, dropout, ``mx.nd.random``)
has only a global generator per context, with no API to read or restore its
state, so it is the one global the trainer sets: ``mx.random.seed(s,
ctx='all')`` (``FaceTrainer._seed_mxnet``), with ``s = seed`` before the
parameters are initialised (construction and the deferred initialisation
of :meth:`FaceTrainer.prepare`) and, with ``reseed_every_step``,
``s = step_seed(seed, iteration)`` before every step, so that dropout masks
are a function of the iteration (:mod:`fr_lib.train.checkpoint`). Code that
draws from MXNet's generator between the trainer's steps should seed it
again itself.

>>> config = TrainConfig(backbone='mobilefacenet', loss='arcface',
...                      batch_size=128, max_iters=20000, lr=0.1,
...                      checkpoint_every=2000, out_dir='runs/mfn')
>>> result = train(config, data=RecordBatches('~/.mxnet/datasets/face/emore',
...                                           batch_size=128))

The package, one module per responsibility:

- :mod:`~fr_lib.train.trainer.config`: :class:`TrainConfig` (with the renamed
  options) and :class:`TrainResult`;
- :mod:`~fr_lib.train.trainer.build`: what is built before the first step
  (devices and kvstore, AMP, head + loss, engine, ``gluon.Trainer`` and
  :func:`exclude_from_weight_decay`);
- :mod:`~fr_lib.train.trainer.face_trainer`: :class:`FaceTrainer`, its
  construction and the loop (``fit``);
- :mod:`~fr_lib.train.trainer.step`: one step (forward, backward, allreduce,
  clipping, update);
- :mod:`~fr_lib.train.trainer.guard`: non-finite detection, snapshot and
  undo, label checks;
- :mod:`~fr_lib.train.trainer.resume`: what a checkpoint holds, loading it,
  claiming ``out_dir``;
- :mod:`~fr_lib.train.trainer.run_dir`: the run directory (lock, log, moving
  an old run aside);
- :mod:`~fr_lib.train.trainer.entry`: :func:`train`, the entry point of
  recipes and ``fr-train``;
- :mod:`~fr_lib.train.trainer.logfile`: :func:`read_log`, :func:`plot_log`.
"""

# The data sources live in fr_lib.data (the BatchSource protocol, the one
# sharding rule and the prefetcher: fr_lib.data.source); importable from here.
from ...data.source import ArrayBatches  # noqa: F401
from ...data.recordio import RecordBatches  # noqa: F401
from .config import (RENAMED_OPTIONS, TrainConfig, TrainResult,  # noqa: F401
                     renamed_options)
from .build import (NO_WD_SUFFIXES, exclude_from_weight_decay,  # noqa: F401
                    loss_refusal, partial_fc_refusal, schedule_refusal)
from .guard import NonFiniteError  # noqa: F401
from .face_trainer import FaceTrainer  # noqa: F401
from .entry import train  # noqa: F401
from .logfile import plot_log, read_log  # noqa: F401

__all__ = ["TrainConfig", "FaceTrainer", "TrainResult", "NonFiniteError",
           "RENAMED_OPTIONS",
           "ArrayBatches", "RecordBatches", "train", "exclude_from_weight_decay",
           "read_log", "plot_log", "NO_WD_SUFFIXES"]
