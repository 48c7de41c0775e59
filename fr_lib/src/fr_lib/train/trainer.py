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
  :class:`~fr_lib.metrics.VerificationEvaluator` and best-model saving;
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
ctx='all')`` (:meth:`FaceTrainer._seed_mxnet`), with ``s = seed`` before the
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
"""
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from ..model_zoo import NativeTrainingView, get_model, native_training_support
from ..native.backend import check_engine, to_native
from ..utils.fileio import atomic_write_text
from .checkpoint import (CheckpointError, CheckpointManager, RunDirectoryError, RunLock,
                         disk_free, step_seed)
from .objective import Objective, objective_refusal
from .schedule import make_schedule

__all__ = ["TrainConfig", "FaceTrainer", "TrainResult", "NonFiniteError",
           "RENAMED_OPTIONS",
           "ArrayBatches", "RecordBatches", "train", "exclude_from_weight_decay",
           "read_log", "plot_log", "NO_WD_SUFFIXES"]

logger = logging.getLogger("fr_lib")

#: Parameter-name endings left out of weight decay by ``no_wd=True``:
#: BatchNorm scale and shift, biases, PReLU slopes.
NO_WD_SUFFIXES = ("_gamma", "_beta", "_bias", "_alpha")



def loss_refusal(name, pk=False, head="auto"):
    """Why :class:`FaceTrainer` cannot train the loss ``name`` (a sentence naming
    the loss), or ``None``.  Read from the loss's contract
    (:class:`fr_lib.loss.LossContract`) by the objective layer
    (:mod:`fr_lib.train.objective`), which builds the head, the extra inputs
    and the running state each trainable loss needs; ``pk``: the batches are
    P×K (a :class:`~fr_lib.data.PKSampler`), as the metric losses need;
    ``head``: ``TrainConfig.head``."""
    why = objective_refusal(name, pk, head)
    return None if why is None else \
        f"loss {name!r} cannot be trained by FaceTrainer/fr-train: {why}"


def partial_fc_refusal(config, distributed=False):
    """Why the settings of ``config`` (a :class:`TrainConfig` or its dict)
    cannot train with ``head='partial_fc'``, a sentence, or ``None`` (the
    loss itself is judged by :func:`loss_refusal`); ``distributed``: more
    than one worker process."""
    get = config.get if isinstance(config, dict) else \
        (lambda key, default=None: getattr(config, key, default))
    rate = get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or \
            not 0.0 < rate <= 1.0:
        return f"sample_rate must be a number in (0, 1], got {rate!r}"
    if str(get("partial_fc_softmax")).lower() not in ("auto", "sharded", "joined"):
        return (f"partial_fc_softmax must be 'auto', 'sharded' or 'joined', got "
                f"{get('partial_fc_softmax')!r}")
    if str(get("optimizer")).lower() != "sgd":
        return (f"the Partial FC head trains its class centres with its own "
                f"row-sparse SGD with momentum, so optimizer={get('optimizer')!r} "
                "would train the backbone and the centres with different rules: "
                "use optimizer='sgd'")
    if get("amp") is not None:
        return "amp is not supported with head='partial_fc' (its update is not scaled)"
    if get("loss_warmup_iters"):
        return ("loss_warmup_iters > 0 is not supported with head='partial_fc' (the "
                "head holds one loss); set it to 0")
    kv = get("kvstore")
    if distributed or kv == "horovod" or str(kv).startswith("dist"):
        return ("the Partial FC head shards the class centres over the contexts of "
                "one process; several worker processes would need an all-gather of "
                f"the embeddings, which fr_lib does not implement (kvstore={kv!r})")
    return None


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss, gradient or update,
    or a checkpoint would have held non-finite values."""


_REASONS = {"loss": "loss", "gradient": "gradient",
            "update": "update (it made a weight or a BatchNorm running statistic "
                      "non-finite)"}


def _flatten_state(state):
    """The NDArrays of an optimizer state (None, an array, nested tuples)."""
    if state is None:
        return []
    if isinstance(state, mx.nd.NDArray):
        return [state]
    if isinstance(state, (list, tuple)):
        return [a for s in state for a in _flatten_state(s)]
    return []


# -- data ------------------------------------------------------------------------

from ..utils.checks import check_int as _check_int, label_errors  # noqa: E402


# The data sources live in fr_lib.data (the BatchSource protocol, the one
# sharding rule and the prefetcher: fr_lib.data.source); importable from here.
from ..data.source import ArrayBatches, ResumableBatches as _ResumableBatches  # noqa: E402,F401
from ..data.recordio import RecordBatches  # noqa: E402,F401


# -- configuration --------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything a training run needs, as plain values (a YAML recipe maps onto it).

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Attributes
    ----------
    backbone : str
        A name of :func:`fr_lib.model_zoo.get_model` (ignored when a backbone
        block is given to :class:`FaceTrainer`).
    backbone_kwargs : dict
        E.g. ``{'embedding_size': 128}``.
    num_classes : int
        0 takes ``data.num_classes``.
    loss : str
        A registered loss (:func:`fr_lib.loss.get_loss`); its contract
        says which head it gets (``NormDense`` C or C·k wide for cosine
        losses, ``Dense`` for ``'softmax'``, none for embedding losses) and
        which extra inputs and state it needs (:mod:`fr_lib.train.objective`).
        Metric losses on P×K batches are refused with the reason.
    loss_kwargs : dict
    head : str
        ``'auto'`` (default): the head of the loss's contract (above);
        ``'normdense'``: the same, insisting that it is a ``NormDense``;
        ``'partial_fc'``: :class:`~fr_lib.train.PartialFC`, the class
        centres sharded over ``ctx`` and a share ``sample_rate`` of them
        (every positive class of the batch included) used per step, with
        their own row-sparse SGD (the trainer's learning rate, ``momentum``,
        ``wd`` and ``clip_gradient``). Partial FC takes the cosine losses
        whose extra inputs are at most λ or the embedding norms (ArcFace,
        CosFace, SphereFace, MagFace, ...) and needs ``optimizer='sgd'``,
        one worker process and no AMP; other settings are refused when the
        trainer is built, with the reason.
    sample_rate : float
        Partial FC's sampling rate in ``(0, 1]`` (1.0: every class, the full
        softmax); ignored by the other heads.
    partial_fc_softmax : str
        Partial FC's softmax over the shards: ``'auto'``, ``'sharded'``
        (each shard keeps its logits, only ``(batch,)`` vectors move) or
        ``'joined'`` (see :class:`~fr_lib.train.PartialFC`).
    pk_k : int
        0: shuffled batches. K > 0: :func:`train` draws P×K batches
        (:class:`~fr_lib.data.PKSampler`, P = ``batch_size // K``) from
        ``data``, as the metric losses (``triplet``, ``contrastive_batch``)
        need.
    loss_warmup_iters : int
        Train with ``warmup_loss`` for this many iterations first.
    warmup_loss : str
        Default ``'normface'`` (the main loss's scale ``s`` unless
        ``warmup_loss_kwargs`` says otherwise).
    warmup_loss_kwargs : dict
    data : str or None
        RecordIO directory used by :func:`train` when no data source is given.
    data_check : bool
        Check every record header when opening ``data``.
    data_source : {'record', 'dali'}
        How :func:`train` reads ``data``: ``'record'`` is
        :class:`~fr_lib.data.recordio.RecordBatches` (decoding with
        ``decode_threads`` and prefetching beside the step), ``'dali'`` is
        :class:`~fr_lib.data.dali.DaliFaceIter` (NVIDIA DALI; decodes on the
        GPU when MXNet and DALI have one). Both are resumable data sources of
        :mod:`fr_lib.data.source`, sharded over the workers by the same rule.
        ``'dali'`` does not draw P×K batches (``pk_k``).
    batch_size : int
        Batch size of one worker, split over its contexts (InsightFace's
        "per GPU" batch times the number of GPUs).
    rand_mirror : bool
    decode_threads : int
        JPEG decoding threads of :class:`RecordBatches` (0: decode in the
        training thread). Formerly ``num_workers``, which still works with a
        DeprecationWarning (in :class:`FaceTrainer` and ``fr_lib.train.launch``
        ``num_workers`` means worker *processes*).
    val_sets : list
        ``.bin`` paths (or names of ``.bin`` files in ``data``) to verify on.
    verify_every : int
        Verify every so many iterations (0: only at the end).
    val_batch_size : int
    best_metric : str or None
        Name of the set whose accuracy selects the best model; None: the
        mean accuracy over all sets.
    ctx : list or None
        ``['cpu(0)', 'cpu(1)']``, ``['gpu(0)']`` or Context objects; None
        uses :func:`fr_lib.utils.get_devices` with ``num_gpus``/``num_cpus``.
        Formerly ``contexts``, which still works with a DeprecationWarning.
    num_gpus : int or None
    num_cpus : int
    kvstore : str or None
        ``'device'``, ``'local'``, ``'dist_sync'``, ``'dist_device_sync'``,
        ``'horovod'`` or None (no kvstore: one context only).
    amp : str or None
        ``'float16'`` (GPU) or ``'bfloat16'``; None trains in float32.
    optimizer : str
    lr : float
        Base learning rate (after the warm-up).
    momentum : float
        Used by ``sgd`` and ``nag``.
    wd : float
    no_wd : bool
        No weight decay on parameters whose names end with
        :data:`NO_WD_SUFFIXES`.
    multi_precision : bool
        Keep float32 master weights for float16 parameters.
    clip_gradient : float or None
        Element-wise clipping of the (batch-averaged) gradient.
    clip_global_norm : float or None
        Rescale the batch-averaged gradient to at most this global L2 norm.
    optimizer_kwargs : dict
        More optimizer arguments.
    max_iters : int
        Iterations to train (the total, counted from the start of the run).
    lr_mode : str
        ``'constant'``, ``'step'``, ``'cosine'`` or ``'poly'``.
    warmup_iters : int
    warmup_begin_lr : float
    lr_steps : list of int
    lr_factor : float
    lr_power : float
    final_lr : float
    max_bad_steps : int
        Consecutive non-finite steps tolerated before :class:`NonFiniteError`.
    check_update : bool
        Check after every update that the weights and running statistics
        are finite, and undo a step that made them non-finite (a divergent
        learning rate). Costs a copy of the weights and optimizer state and
        one pass over the weights per step, on the device and with no
        extra wait (measured on 2 loaded CPU cores: about 20 ms for
        MobileFaceNet with an 85,742-class head, 12 M values, against a step
        of 460 ms or more at batch 16); False checks only the loss and the
        gradient before the update (BatchNorm statistics are still restored
        after a bad step).
    out_dir : str or None
        Checkpoints go to ``out_dir/checkpoints``, the log to
        ``out_dir/log.jsonl``. None writes nothing (no log, no checkpoint,
        no best model; ``resume`` is then refused): the short in-memory runs
        of the book's MNIST pictures (:func:`fr_lib.train.features.train_features`).
    checkpoint_every : int
        0: only at the end.
    keep_last : int
    resume : bool or str
        True: continue from the newest checkpoint in ``out_dir`` if there is
        one (if there is none, what an earlier run left without a checkpoint
        is moved aside as with ``fresh``); a checkpoint directory, or the
        name of one in ``out_dir/checkpoints`` (``'ckpt-000000070'``): from
        that checkpoint (newer checkpoints of the abandoned run are moved
        aside); False: start a new run, which needs an ``out_dir`` that holds
        no run (see ``fresh``).
    fresh : bool
        Start a new run even if ``out_dir`` holds one: its ``log.jsonl`` and
        ``checkpoints/`` are first moved to ``<out_dir>.old-<time>`` (nothing
        is deleted, nothing is mixed). Without it (and without ``resume``)
        a used ``out_dir`` is refused with :class:`RunDirectoryError`; with
        ``resume`` it is a ValueError.
    log_every : int
    progress : bool
        Show a tqdm bar.
    seed : int
    reseed_every_step : bool
        Reseed MXNet's global generators from ``(seed, iteration)`` before
        each step (exact resumption with dropout; costs one small call per
        step; see "Randomness" in :mod:`fr_lib.train.trainer`).
    hybridize : bool
    engine : str
        How the backbone's training pass runs: ``'auto'`` (default) trains a
        MobileFaceNet on CPU contexts in float32 through
        :class:`~fr_lib.model_zoo.NativeTrainingView` (fr_lib's channels-last
        native operators, same parameters and results up to float32
        rounding, 1.9-2.5x faster in ``benchmarks/bench_train.py``) and
        anything else with MXNet's operators; ``'native'`` insists on the
        view (ValueError when it cannot be used); ``'mxnet'`` never uses it.
        With ``'auto'`` and ``'native'`` the loss and the layers that have a
        native form are also converted on CPU (:func:`fr_lib.native.to_native`);
        ``'mxnet'`` runs every block's MXNet formula as written.
    """
    backbone: str = "mobilefacenet"
    backbone_kwargs: dict = field(default_factory=dict)
    num_classes: int = 0
    loss: str = "arcface"
    loss_kwargs: dict = field(default_factory=dict)
    head: str = "auto"
    sample_rate: float = 0.1
    partial_fc_softmax: str = "auto"
    loss_warmup_iters: int = 0
    pk_k: int = 0
    warmup_loss: str = "normface"
    warmup_loss_kwargs: dict = field(default_factory=dict)
    data: str = None
    data_check: bool = True
    data_source: str = "record"
    batch_size: int = 128
    rand_mirror: bool = True
    decode_threads: int = 0
    val_sets: list = field(default_factory=list)
    verify_every: int = 0
    val_batch_size: int = 64
    best_metric: str = None
    ctx: list = None
    num_gpus: int = None
    num_cpus: int = 1
    kvstore: str = "device"
    amp: str = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    wd: float = 5e-4
    no_wd: bool = False
    multi_precision: bool = False
    clip_gradient: float = None
    clip_global_norm: float = None
    optimizer_kwargs: dict = field(default_factory=dict)
    max_iters: int = 1000
    lr_mode: str = "cosine"
    warmup_iters: int = 0
    warmup_begin_lr: float = 0.0
    lr_steps: list = field(default_factory=list)
    lr_factor: float = 0.1
    lr_power: float = 2.0
    final_lr: float = 0.0
    max_bad_steps: int = 10
    check_update: bool = True
    out_dir: str = "runs/fr"
    checkpoint_every: int = 1000
    keep_last: int = 3
    resume: object = False
    fresh: bool = False
    log_every: int = 10
    progress: bool = True
    seed: int = 0
    reseed_every_step: bool = True
    hybridize: bool = True
    engine: str = "auto"

    @classmethod
    def from_dict(cls, values):
        """Build a config from a dict (e.g. a parsed YAML recipe).

        The old names of renamed options (:data:`RENAMED_OPTIONS`) are
        accepted with a DeprecationWarning.

        Raises
        ------
        ValueError
            For an unknown key (the message lists the valid ones), or an old
            and a new name of the same option given together.
        """
        values = renamed_options(values, "TrainConfig.from_dict")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: {names}")
        return cls(**values)

    def to_dict(self):
        """The config as a JSON-serialisable dict (contexts as strings)."""
        d = dataclasses.asdict(self)
        if d["ctx"] is not None:
            d["ctx"] = [str(c) for c in d["ctx"]]
        return d


#: Options of :class:`TrainConfig` that were renamed: ``old -> new``. The old
#: names still work (constructor, :meth:`TrainConfig.from_dict`, YAML recipes,
#: ``fr-train --set``) with a DeprecationWarning.
RENAMED_OPTIONS = {"num_workers": "decode_threads", "contexts": "ctx"}


def renamed_options(values, where, stacklevel=3):
    """``values`` (a dict of options) with the old names of renamed options
    (:data:`RENAMED_OPTIONS`) replaced by the new ones, warning once per old
    name; ``where`` names the caller in the message.

    Raises
    ------
    ValueError
        When an old name and its new name are both given.
    """
    old = [k for k in values if k in RENAMED_OPTIONS]
    if not old:
        return values
    values = dict(values)
    for key in old:
        new = RENAMED_OPTIONS[key]
        if new in values:
            raise ValueError(f"{where}: {key!r} is the old name of {new!r}; give "
                             f"only {new!r}")
        import warnings
        warnings.warn(f"{where}: the training option {key!r} is now called {new!r} "
                      f"({key!r} will be removed)", DeprecationWarning,
                      stacklevel=stacklevel)
        values[new] = values.pop(key)
    return values


def _accept_renamed(init):
    """Wrap the dataclass ``__init__`` so that the old option names still work."""
    import functools

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **renamed_options(kwargs, "TrainConfig", stacklevel=4))
    return __init__


def _renamed_property(old, new):
    def get(self):
        import warnings
        warnings.warn(f"TrainConfig.{old} is now TrainConfig.{new}", DeprecationWarning,
                      stacklevel=2)
        return getattr(self, new)

    def set_(self, value):
        import warnings
        warnings.warn(f"TrainConfig.{old} is now TrainConfig.{new}", DeprecationWarning,
                      stacklevel=2)
        setattr(self, new, value)
    return property(get, set_, doc=f"Deprecated name of :attr:`{new}`.")


TrainConfig.__init__ = _accept_renamed(TrainConfig.__init__)
for _old, _new in RENAMED_OPTIONS.items():
    setattr(TrainConfig, _old, _renamed_property(_old, _new))


def _parse_context(c):
    if isinstance(c, mx.Context):
        return c
    m = re.fullmatch(r"\s*(cpu|gpu)\s*\(\s*(\d+)\s*\)\s*", str(c))
    if not m:
        raise ValueError(f"bad context {c!r}: use 'cpu(0)', 'gpu(1)' or an mx.Context")
    return mx.Context(m.group(1), int(m.group(2)))


def exclude_from_weight_decay(params, suffixes=NO_WD_SUFFIXES):
    """Set ``wd_mult = 0`` on parameters whose names end with ``suffixes``.

    Parameters
    ----------
    params : ParameterDict or dict
    suffixes : tuple of str
        Default: BatchNorm gamma/beta, biases and PReLU slopes.

    Returns
    -------
    list of str
        The names of the excluded parameters.
    """
    names = []
    for name, p in params.items():
        if name.endswith(tuple(suffixes)):
            p.wd_mult = 0.0
            names.append(name)
    return names


@dataclass
class TrainResult:
    """What :meth:`FaceTrainer.fit` returns.

    Attributes
    ----------
    iterations : int
        Iterations done in total (including those before a resume).
    bad_steps : int
        Skipped non-finite steps, in total.
    last_loss : float or None
        Mean loss of the last logged window.
    best_metric : float or None
        Best verification accuracy (see ``TrainConfig.best_metric``).
    best_iteration : int or None
    results : dict
        The last verification results (``name -> VerificationReport``).
    checkpoint : str or None
        The last checkpoint written.
    log_path : str
    seconds : float
        Wall time of this call.
    images_per_second : float
        Training throughput of this call (steps only).
    """
    iterations: int
    bad_steps: int
    last_loss: float = None
    best_metric: float = None
    best_iteration: int = None
    results: dict = field(default_factory=dict)
    checkpoint: str = None
    log_path: str = None
    seconds: float = 0.0
    images_per_second: float = 0.0


class FaceTrainer:
    """Train a face recognition backbone with a margin loss (see the module docstring).

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    config : TrainConfig or dict
    data : data source or callable
        An object with ``next_batch() -> (X, y)``, ``state_dict()`` and
        ``load_state_dict(state)`` (:class:`ArrayBatches`,
        :class:`RecordBatches`), or a callable ``data(num_parts, part_index)``
        returning one, so that each distributed worker gets its own shard.
    backbone : HybridBlock, optional
        Default ``get_model(config.backbone, **config.backbone_kwargs)``;
        a block whose parameters are already initialised (e.g. pretrained)
        keeps them.
    head : HybridBlock, optional
        Default: the head of the loss's contract (``NormDense(num_classes)``,
        ``Dense`` for ``'softmax'``; see :mod:`fr_lib.train.objective`), or
        :class:`~fr_lib.train.PartialFC` with ``config.head='partial_fc'``
        (then no head block may be given).
    val_sets : dict, optional
        ``name -> (images, issame)`` or :class:`~fr_lib.data.VerificationSet`;
        default: the ``.bin`` files of ``config.val_sets``.
    callbacks : list of callable or Callback
        Called as ``callback(trainer, record)`` after every iteration with
        the record ``{'iteration', 'loss', 'lr', 'skipped'}``; a
        :class:`~fr_lib.train.callbacks.Callback` also gets ``on_begin(trainer)``
        and ``on_end(trainer, result)`` around each :meth:`fit`.
    objective : fr_lib.train.objective.Objective, optional
        A prebuilt objective (head, loss, extra inputs; the interface of
        :class:`fr_lib.train.objective.Objective`) instead of the one of
        ``config.loss``, e.g. a loss plus a regulariser
        (:func:`fr_lib.train.features.build_objective`).

    Attributes
    ----------
    net : HybridBlock
        The backbone.
    head : HybridBlock or None
        None with ``config.head='partial_fc'`` (see ``partial_fc``).
    ctx : list of Context
        The contexts of this worker (``contexts`` is a deprecated alias).
    trainer : gluon.Trainer
    iteration : int
        Completed iterations.
    bad_steps : int
        Steps skipped because the loss or the gradient was not finite.
    overflow_steps : int
        AMP steps skipped by the dynamic loss scaler (float16 overflow; not
        counted as bad steps, they are routine while the scale settles).
    checkpoints : CheckpointManager
    log_path : str

    Notes
    -----
    The gradient of a step is the sum of the per-sample losses over the
    whole batch (all contexts, all workers) divided by the number of
    samples, so one context and two contexts with the same total batch give
    the same update (up to float rounding; BatchNorm statistics are computed
    per context, as in every data-parallel MXNet program). Only rank 0 of a
    distributed run writes checkpoints and logs (the logged loss is rank
    0's share of the batch); to resume, every worker must see the same
    ``out_dir``.
    """

    def __init__(self, config, data, backbone=None, head=None, val_sets=None,
                 callbacks=(), objective=None):
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        self.config = cfg = config
        for name in ("max_iters", "batch_size"):
            _check_int(name, getattr(cfg, name), 1)
        for name in ("checkpoint_every", "verify_every", "loss_warmup_iters"):
            _check_int(name, getattr(cfg, name), 0)
        _check_int("log_every", cfg.log_every, 1)
        _check_int("max_bad_steps", cfg.max_bad_steps, 1)
        if cfg.fresh and cfg.resume:
            raise ValueError(f"fresh=True (start a new run, moving the old one aside) "
                             f"and resume={cfg.resume!r} (continue it) contradict each "
                             "other: set one of them")
        if str(cfg.head).lower() == "partial_fc" and objective is None:
            # refused before anything process-wide (AMP) is set up
            why = partial_fc_refusal(cfg)
            if why is not None:
                raise ValueError(f"head='partial_fc': {why}")
        self.callbacks = list(callbacks)
        self._hvd = None
        self._setup_kvstore()
        if cfg.amp is not None:
            self._init_amp()
        _check_int("seed", cfg.seed, 0)
        # initialisers of parameters whose shapes are known now draw here
        self._seed_mxnet(cfg.seed)
        self.data = data(self.num_workers, self.rank) if callable(data) and \
            not hasattr(data, "next_batch") else data
        for attr in ("next_batch", "state_dict", "load_state_dict"):
            if not hasattr(self.data, attr):
                raise TypeError(f"data needs a {attr}() method (see ArrayBatches)")
        num_classes = cfg.num_classes or getattr(self.data, "num_classes", 0)
        if not num_classes and head is None:
            raise ValueError("num_classes is unknown: set config.num_classes")
        self.num_classes = int(num_classes)
        self.net = backbone if backbone is not None else \
            get_model(cfg.backbone, **cfg.backbone_kwargs)
        # head + loss (+ extra inputs and running state) from the loss's
        # contract, in one place: fr_lib.train.objective
        from ..data.sampler import PKSampler
        pk = isinstance(getattr(self.data, "batch_sampler", None), PKSampler)
        head_kind = str(cfg.head).lower()
        for name in () if objective is not None else \
                (cfg.loss, cfg.warmup_loss) if cfg.loss_warmup_iters else (cfg.loss,):
            why = loss_refusal(str(name).lower(), pk, head_kind)
            if why is not None:
                raise ValueError(why)
        pfc_args = None
        if head_kind == "partial_fc" and objective is None:
            if self.num_workers > 1:  # (a launcher's DMLC_* environment)
                raise ValueError(f"head='partial_fc': {partial_fc_refusal(cfg, True)}")
            pfc_args = dict(sample_rate=float(cfg.sample_rate), ctx=self.ctx,
                            softmax=str(cfg.partial_fc_softmax).lower(),
                            momentum=cfg.momentum, wd=cfg.wd,
                            clip_gradient=cfg.clip_gradient, rng=self.rng)
        self.objective = objective if objective is not None else \
            Objective(cfg.loss, cfg.loss_kwargs, self.num_classes, head, pk,
                      head_kind, pfc_args)
        self.head, self.loss = self.objective.head, self.objective.loss
        self.warmup_objective = None
        if cfg.loss_warmup_iters:
            if not self.objective.has_head:
                raise ValueError(f"loss_warmup_iters={cfg.loss_warmup_iters}: the loss "
                                 f"{cfg.loss!r} has no head for warmup_loss "
                                 f"{cfg.warmup_loss!r} to share; set loss_warmup_iters=0")
            warm_kwargs = dict(cfg.warmup_loss_kwargs)
            if cfg.warmup_loss.lower() == "normface" and "s" not in warm_kwargs \
                    and hasattr(self.loss, "_s"):
                warm_kwargs["s"] = self.loss._s
            self.warmup_objective = Objective(cfg.warmup_loss, warm_kwargs,
                                              self.num_classes, self.head)
            main_c, warm_c = self.objective.contract, self.warmup_objective.contract
            if (main_c.head, main_c.head_k_arg) != (warm_c.head, warm_c.head_k_arg):
                raise ValueError(f"warmup_loss {cfg.warmup_loss!r} needs another head "
                                 f"than loss {cfg.loss!r} ({warm_c.head}, "
                                 f"k={warm_c.head_k_arg} vs {main_c.head}, "
                                 f"k={main_c.head_k_arg}); set loss_warmup_iters=0")
        self.warmup_loss = None if self.warmup_objective is None \
            else self.warmup_objective.loss
        for block in (self.net, self.head):
            if block is not None:
                self._initialize(block)
        self.engine, why = self._choose_engine()
        # native: the backbone's training pass on fr_lib's NHWC operators,
        # traced into the same graph as the head and the loss
        body = NativeTrainingView(self.net) if self.engine == "native" else self.net
        step = [o.make_step(body) if o is not None else None
                for o in (self.objective, self.warmup_objective)]
        self.engine_reason = why
        if str(cfg.engine).lower() != "mxnet":
            # the loss's and the layers' own native forms (fr_lib.native),
            # whether or not the whole backbone runs in the native view
            for step_net in step:
                if step_net is not None:
                    to_native(step_net, "auto", self.ctx)
        self._step_net, self._warm_net = step
        if cfg.hybridize:
            # Everything after a static_alloc graph must be hybridized too: an
            # imperative block behind it made a training step ~50x slower.
            self.net.hybridize(static_alloc=True)
            for step_net in (self._step_net, self._warm_net):
                if step_net is not None:
                    step_net.hybridize(static_alloc=True)
        self.params = gluon.ParameterDict()
        self.params.update(self.net.collect_params())
        if self.head is not None:
            self.params.update(self.head.collect_params())
        self.no_wd_params = exclude_from_weight_decay(self.params) if cfg.no_wd else []
        self.schedule = make_schedule(
            cfg.lr_mode, cfg.lr, max_update=cfg.max_iters, warmup_steps=cfg.warmup_iters,
            warmup_begin_lr=cfg.warmup_begin_lr, steps=cfg.lr_steps,
            factor=cfg.lr_factor, power=cfg.lr_power, final_lr=cfg.final_lr)
        self._make_trainer()
        self.iteration, self.bad_steps, self._consecutive_bad = 0, 0, 0
        self.overflow_steps = 0
        self._shapes_known = False
        self._verified_at = None
        self.best_metric, self.best_iteration = None, None
        self.results = {}
        if cfg.out_dir is None:  # nothing on disk: no log, no checkpoints
            if cfg.resume:
                raise ValueError(f"resume={cfg.resume!r} needs an out_dir (out_dir=None "
                                 "keeps no checkpoints)")
            self.out_dir = self.checkpoints = self.best_checkpoints = None
            self.log_path, self.is_writer = None, False
        else:
            self.out_dir = os.path.abspath(os.path.expanduser(cfg.out_dir))
            self.is_writer = self.rank == 0
            ckpt_dir = os.path.join(self.out_dir, "checkpoints")
            # their stale temporaries are removed once the run holds the lock
            self.checkpoints = CheckpointManager(ckpt_dir, "ckpt", cfg.keep_last,
                                                 clean=False)
            self.best_checkpoints = CheckpointManager(ckpt_dir, "best", 1, clean=False)
            self.log_path = os.path.join(self.out_dir, "log.jsonl")
        self.evaluator = self._make_evaluator(val_sets)
        self.last_checkpoint = None
        self._lock = None
        self._claimed = False  # the first fit() has checked and taken out_dir
        self._snap, self._snap_states, self._snap_counts = {}, [], None
        self._snap_full = True

    def rng(self, stream):
        """The trainer's NumPy generator for stream ``stream`` (an int) at
        the current iteration: ``default_rng(SeedSequence(seed,
        spawn_key=(iteration, stream)))``. A function of the run's seed and
        position only (nothing to save, the same after a resume); stream 1 is
        Partial FC's class sampling. NumPy's global generator is not used."""
        return np.random.default_rng(np.random.SeedSequence(
            int(self.config.seed), spawn_key=(int(self.iteration), int(stream))))

    @staticmethod
    def _seed_mxnet(seed):
        """Seed MXNet's global generators of every context: the one global
        state the trainer sets (MXNet has no private generators and no API
        to read theirs); see "Randomness" in the module docstring."""
        mx.random.seed(int(seed), ctx="all")

    @property
    def partial_fc(self):
        """The :class:`~fr_lib.train.PartialFC` head, or None."""
        return getattr(self.objective, "partial_fc", None)

    @property
    def contexts(self):
        """Deprecated name of :attr:`ctx`."""
        import warnings
        warnings.warn("FaceTrainer.contexts is now FaceTrainer.ctx", DeprecationWarning,
                      stacklevel=2)
        return self.ctx

    # -- setup -------------------------------------------------------------------
    def _choose_engine(self):
        """('native' or 'mxnet', why not native) from ``config.engine``."""
        mode = check_engine(self.config.engine, "TrainConfig.engine")
        if mode == "mxnet":
            return "mxnet", "engine='mxnet'"
        why = ""
        if any(c.device_type != "cpu" for c in self.ctx):
            why = "the native training operators run on CPU only"
        elif self.config.amp is not None:
            why = "amp is set (the native operators are float32)"
        else:
            why = native_training_support(self.net)[1]
        if not why:
            return "native", ""
        if mode == "native":
            raise ValueError(f"engine='native' cannot be used: {why}")
        return "mxnet", why

    def _setup_kvstore(self):
        cfg = self.config
        kv = cfg.kvstore
        self.num_workers, self.rank = 1, 0
        if kv == "horovod":
            try:
                import horovod.mxnet as hvd
            except ImportError:
                raise ImportError("kvstore='horovod' needs Horovod built with MXNet "
                                  "support: HOROVOD_WITH_MXNET=1 pip install "
                                  "horovod") from None
            hvd.init()
            self._hvd = hvd
            self.num_workers, self.rank = hvd.size(), hvd.rank()
            gpus = mx.context.num_gpus()
            self.ctx = [mx.gpu(hvd.local_rank())] if gpus else [mx.cpu()]
            self.kvstore = None
            return
        if cfg.ctx:
            self.ctx = [_parse_context(c) for c in cfg.ctx]
        else:
            from ..utils.device import get_devices
            self.ctx = get_devices(cfg.num_gpus, cfg.num_cpus)
        if kv is None or kv == "none":
            if len(self.ctx) > 1:
                raise ValueError("kvstore=None works with one context only")
            self.kvstore = None
        elif kv in ("device", "local"):
            self.kvstore = kv
        elif kv.startswith("dist"):
            store = mx.kv.create(kv)
            self.num_workers, self.rank = store.num_workers, store.rank
            self.kvstore = store
        else:
            raise ValueError(f"unknown kvstore {kv!r}; choose from 'device', 'local', "
                             "'dist_sync', 'dist_device_sync', 'horovod', None")

    def _init_amp(self):
        from mxnet.contrib import amp
        dtype = self.config.amp
        if dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp must be None, 'float16' or 'bfloat16', got {dtype!r}")
        if dtype == "float16" and any(c.device_type != "gpu" for c in self.ctx):
            raise ValueError("amp='float16' needs GPU contexts (MXNet has no fast "
                             "float16 kernels on CPU); use amp=None or 'bfloat16'")
        # Fully connected layers stay float32: the cosine logits of the head
        # (and the margin after them) need float32's resolution near cos = 1.
        from mxnet.contrib.amp import amp as amp_impl
        key = "float16" if dtype == "float16" else amp_impl.bfloat16
        low = [op for op in amp.list_lp16_ops(key) if op != "FullyConnected"]
        amp.init(target_dtype=dtype, target_precision_ops=low,
                 fp32_ops=amp.list_fp32_ops(key) + ["FullyConnected"])
        self._amp = amp

    def _initialize(self, block):
        params = block.collect_params()
        fresh = []
        for p in params.values():
            try:
                p.list_ctx()
            except RuntimeError:  # not initialised yet
                fresh.append(p)
                continue
            p.reset_ctx(self.ctx)
        if fresh:
            block.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out",
                                            magnitude=2), ctx=self.ctx)

    def _make_trainer(self):
        cfg = self.config
        opt = dict(cfg.optimizer_kwargs)
        opt.setdefault("learning_rate", self.schedule(0))
        opt.setdefault("wd", cfg.wd)
        if cfg.optimizer.lower() in ("sgd", "nag"):
            opt.setdefault("momentum", cfg.momentum)
        if cfg.multi_precision:
            opt["multi_precision"] = True
        if cfg.clip_gradient:
            opt["clip_gradient"] = float(cfg.clip_gradient)
        if self._hvd is not None:
            self.trainer = self._hvd.DistributedTrainer(self.params, cfg.optimizer, opt)
            self._need_broadcast = True
        else:
            self.trainer = gluon.Trainer(self.params, cfg.optimizer, opt,
                                         kvstore=self.kvstore, update_on_kvstore=False)
            self._need_broadcast = False
        if cfg.amp is not None:
            self._amp.init_trainer(self.trainer)

    def _make_evaluator(self, val_sets):
        cfg = self.config
        if val_sets is None and cfg.val_sets:
            from ..data.binfile import read_bin
            val_sets = {}
            for entry in cfg.val_sets:
                path = os.path.expanduser(entry)
                if not os.path.exists(path) and cfg.data:
                    path = os.path.join(os.path.expanduser(cfg.data), entry + ".bin")
                vs = read_bin(path)
                val_sets[vs.name] = vs
        if not val_sets:
            return None
        from ..metrics.evaluator import VerificationEvaluator
        return VerificationEvaluator(val_sets, batch_size=cfg.val_batch_size,
                                     ctx=self.ctx[0], progress=False)

    # -- one step ----------------------------------------------------------------
    def current_lr(self):
        """The learning rate of the next step."""
        return self.schedule(self.iteration)

    def train_step(self, X, y):
        """One iteration on the batch ``(X, y)``.

        Parameters
        ----------
        X, y : NDArray
            The batch of this worker; split over its contexts.

        Returns
        -------
        float or None
            The mean loss, or None when the step was skipped as non-finite
            (the parameters, the optimizer state and the BatchNorm running
            statistics are then as they were before the step).

        Raises
        ------
        ValueError
            When a label is not a class id in ``[0, num_classes)``.
        NonFiniteError
            After ``max_bad_steps`` consecutive skipped steps.

        Notes
        -----
        The guard costs no extra wait for the device: the loss, the squared
        norm of the gradients and that of the updated weights and running
        statistics come back to the host in one transfer after the update
        (two with AMP or ``clip_global_norm``, which need the gradient norm
        before the update). Restoring needs a copy of the weights, optimizer
        state and running statistics taken before each step (on the device,
        asynchronous). A squared norm that overflows float32 (values beyond
        about 1e19) counts as non-finite.
        """
        cfg = self.config
        self.prepare(X)
        self._check_labels(y)
        lr = self.schedule(self.iteration)
        self.trainer.set_learning_rate(lr)
        if cfg.reseed_every_step:
            self._seed_mxnet(step_seed(cfg.seed, self.iteration))
        warm = self._warm_net is not None and self.iteration < cfg.loss_warmup_iters
        step_net = self._warm_net if warm else self._step_net
        objective = self.warmup_objective if warm else self.objective
        n = X.shape[0]
        if n < len(self.ctx):
            raise ValueError(f"a batch of {n} cannot be split over "
                             f"{len(self.ctx)} contexts")
        xs = gluon.utils.split_and_load(X, self.ctx, even_split=False)
        ys = gluon.utils.split_and_load(y, self.ctx, even_split=False)
        # the kvstore's first broadcast of the weights comes before the copy
        self._init_kvstore()
        # before the forward pass: BatchNorm writes its running statistics
        # during the step (MXNet's in the backward pass, the native engine's
        # in the forward pass)
        self._snapshot(full=cfg.check_update)
        # Partial FC samples its classes from the trainer's generator
        rng = self.rng(1) if objective.partial_fc_head else None
        with autograd.record():
            # the contract's extra inputs (λ, running t / μ, σ) per context
            losses, stats = objective.forward(step_net, xs, ys, self.ctx,
                                              self.iteration, rng)
            if cfg.amp is not None:  # the scaling must be recorded too
                with self._amp.scale_loss(losses, self.trainer) as scaled:
                    autograd.backward(scaled)
        if cfg.amp is None:
            autograd.backward(losses)
        if self._need_broadcast:  # Horovod: after the deferred init
            self._hvd.broadcast_parameters(self.params, root_rank=0)
            self._need_broadcast = False
            if self._snap_full:  # an undo must restore rank 0's weights
                for name, p in self.params.items():
                    if p.grad_req != "null":
                        for i, arr in enumerate(p.list_data()):
                            self._keep(("p", name, i), arr)
        c0 = self.ctx[0]
        objective.advance(stats, c0)  # undone below if the step is skipped
        loss_sums = [l.sum().astype("float32").reshape((1,)).as_in_context(c0)
                     for l in losses]
        self.trainer.allreduce_grads()
        # the gradient the optimizer applies is the sum over all samples of
        # all workers divided by their number; Horovod's trainer already
        # divides by the number of workers itself
        total = n * self.num_workers
        update_n = n if self._hvd is not None else total
        self.iteration += 1
        nl = len(loss_sums)
        if cfg.amp is None and not cfg.clip_global_norm and cfg.check_update:
            # update first, then one transfer: loss, gradient and new weights
            grad_sq = self._grad_sq()  # (before a Partial FC head's update)
            self.trainer.update(update_n)
            objective.step_head(lr, n)
            values = self._fetch(loss_sums + [grad_sq, self._state_sq()])
            loss_sum = float(values[:nl].sum())
            why = self._why_bad(loss_sum, values[nl], values[nl + 1])
        else:
            check_grads = cfg.amp is None or bool(cfg.clip_global_norm)
            # (check_update=False: the old order, no copy of the weights)
            if check_grads and cfg.amp is not None:
                self._amp.unscale(self.trainer)
            values = self._fetch(loss_sums + ([self._grad_sq()] if check_grads else []))
            loss_sum = float(values[:nl].sum())
            sq = values[nl] if check_grads else 0.0
            why = self._why_bad(loss_sum, sq, 0.0)
            if why == "gradient" and cfg.amp is not None:
                # float16 overflow: AMP's loss scaler skips the update and
                # lowers the scale (dynamic loss scaling), not a bad step
                self.trainer.update(update_n)
                self.overflow_steps += 1
                return loss_sum / n
            if why is None:
                if cfg.clip_global_norm:
                    self._clip(sq, total)
                self.trainer.update(update_n)
                objective.step_head(lr, n)
                if cfg.check_update:
                    why = self._why_bad(0.0, 0.0, float(self._state_sq().asscalar()))
        if why is not None:
            self._restore()
            objective.undo()
            self.bad_steps += 1
            self._consecutive_bad += 1
            self._log({"event": "bad_step", "iteration": self.iteration,
                       "loss": loss_sum / n if math.isfinite(loss_sum) else None,
                       "reason": why, "bad_steps": self.bad_steps})
            logger.warning("fr_lib: iteration %d: non-finite %s, step skipped and "
                           "undone (%d so far)", self.iteration, _REASONS[why],
                           self.bad_steps)
            if self._consecutive_bad >= cfg.max_bad_steps:
                latest = self.checkpoints.latest() if self.is_writer else None
                raise NonFiniteError(
                    f"{self._consecutive_bad} consecutive steps (up to iteration "
                    f"{self.iteration}) had a non-finite loss, gradient or update "
                    f"(the last: {_REASONS[why]}); training stopped. The last good "
                    f"checkpoint is kept: {latest or 'none was written'}. Lower the "
                    "learning rate, add warm-up or gradient clipping, or check the "
                    "data.")
            return None
        self._consecutive_bad = 0
        return loss_sum / n

    # -- the guard's pieces --------------------------------------------------------
    @staticmethod
    def _fetch(parts):
        """One device-to-host transfer of several (1,) arrays (float64 on the host)."""
        return mx.nd.concat(*parts, dim=0).asnumpy().astype(np.float64)

    @staticmethod
    def _why_bad(loss_sum, grad_sq, state_sq):
        if not math.isfinite(loss_sum):
            return "loss"
        if not math.isfinite(grad_sq):
            return "gradient"
        if not math.isfinite(state_sq):
            return "update"
        return None

    @staticmethod
    def _sum_sq(arrays, ctx):
        """Sum of squares of ``arrays`` (one context) as a (1,) float32 array on ``ctx``."""
        if not arrays:
            return mx.nd.zeros((1,), ctx=ctx)
        if all(a.dtype == np.float32 for a in arrays):
            # one operator for all of them (a sum and a square per array
            # cost ~20 ms of a MobileFaceNet step)
            sq = mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).sum()
        else:
            sq = mx.nd.add_n(*[mx.nd.sum(mx.nd.square(a.astype("float32")))
                               for a in arrays])
        return sq.reshape((1,)).as_in_context(ctx)

    def _grad_sq(self):
        # after allreduce every context holds the sum
        c0 = self.ctx[0]
        parts = [self._sum_sq(self._grads(0), c0)]
        # a Partial FC head: the gradients of its sampled rows, per shard
        parts += [self._sum_sq([g], c0) for _, g in self._head_grads()]
        return mx.nd.add_n(*parts) if len(parts) > 1 else parts[0]

    def _head_grads(self):
        return self.objective.head_grads() if self.objective.partial_fc_head else []

    def _head_arrays(self):
        return self.objective.head_arrays() if self.objective.partial_fc_head else []

    def _state_sq(self):
        """Squared norm of the weights (context 0: every context applies the
        same update) and of the running statistics of every context."""
        c0 = self.ctx[0]
        parts = []
        for i in range(len(self.ctx)):
            arrays = [p.list_data()[i] for p in self.params.values()
                      if i == 0 or p.grad_req == "null"]
            if arrays:
                parts.append(self._sum_sq(arrays, c0))
        parts += [self._sum_sq([a], c0) for label, _, a in self._head_arrays()
                  if " weight " in label]
        return mx.nd.add_n(*parts) if len(parts) > 1 else parts[0]

    def _optimizer_arrays(self, i):
        """``(index, [NDArray...])`` of the optimizer state of context ``i``."""
        updaters = getattr(self.trainer, "_updaters", None) or []
        if i >= len(updaters):
            return []
        return [(idx, _flatten_state(st)) for idx, st in updaters[i].states.items()]

    def _keep(self, key, arr):
        buf = self._snap.get(key)
        if buf is None or buf.shape != arr.shape or buf.dtype != arr.dtype or \
                buf.context != arr.context:
            self._snap[key] = arr.copy()
        else:
            arr.copyto(buf)

    def _snapshot(self, full=True):
        """Copy (on each device, asynchronously, into buffers kept between
        steps) everything a step writes: weights, running statistics,
        optimizer state and the optimizer's update counters (``full=False``:
        the running statistics only)."""
        self._snap_full = full
        for name, p in self.params.items():
            if full or p.grad_req == "null":
                for i, arr in enumerate(p.list_data()):
                    self._keep(("p", name, i), arr)
        self._snap_states = []
        self._snap_counts = None
        if not full:
            return
        for i in range(len(self.ctx)):
            indices = []
            for idx, arrays in self._optimizer_arrays(i):
                for j, arr in enumerate(arrays):
                    self._keep(("s", i, idx, j), arr)
                indices.append(idx)
            self._snap_states.append(set(indices))
        opt = getattr(self.trainer, "_optimizer", None)
        self._snap_counts = None if opt is None else (
            {k: dict(v) for k, v in opt._all_index_update_counts.items()}, opt.num_update)

    def _restore(self):
        """Undo the step: copy the snapshot back (see :meth:`_snapshot`)."""
        for name, p in self.params.items():
            if self._snap_full or p.grad_req == "null":
                for i, arr in enumerate(p.list_data()):
                    self._snap[("p", name, i)].copyto(arr)
        updaters = getattr(self.trainer, "_updaters", None) or []
        for i, keep in enumerate(self._snap_states):
            if i >= len(updaters):
                break
            for idx, arrays in self._optimizer_arrays(i):
                if idx in keep:
                    for j, arr in enumerate(arrays):
                        self._snap[("s", i, idx, j)].copyto(arr)
            for idx in [k for k in updaters[i].states if k not in keep]:
                # created by this step's update: the next one starts afresh
                del updaters[i].states[idx]
                updaters[i].states_synced.pop(idx, None)
        if self._snap_counts is not None:
            opt = self.trainer._optimizer
            counts, num_update = self._snap_counts
            for k in list(opt._all_index_update_counts):
                if k not in counts:
                    del opt._all_index_update_counts[k]
            for k, v in counts.items():  # in place: the optimizer holds references
                d = opt._all_index_update_counts.setdefault(k, {})
                d.clear()
                d.update(v)
            opt.num_update = num_update

    def _nonfinite_tensors(self):
        """Names of the weights, running statistics and optimizer states
        holding a non-finite value (one transfer when all are finite)."""
        c0 = self.ctx[0]
        parts = [self._state_sq()]
        for i in range(len(self.ctx)):
            arrays = [a for _, arrs in self._optimizer_arrays(i) for a in arrs]
            if arrays:
                parts.append(self._sum_sq(arrays, c0))
        head = self._head_arrays()
        parts += [self._sum_sq([a], c0) for _, _, a in head]
        if math.isfinite(float(mx.nd.add_n(*parts).asscalar()) if len(parts) > 1
                         else float(parts[0].asscalar())):
            return []
        bad = []
        for name, p in self.params.items():
            for i, arr in enumerate(p.list_data()):
                if not np.isfinite(arr.asnumpy()).all():
                    bad.append(f"{name} ({self.ctx[i]})")
        for i in range(len(self.ctx)):
            for idx, arrays in self._optimizer_arrays(i):
                if any(not np.isfinite(a.asnumpy()).all() for a in arrays):
                    bad.append(f"optimizer state {idx} ({self.ctx[i]})")
        bad += [f"{label} ({self.ctx[i]})" for label, i, a in head
                if not np.isfinite(a.asnumpy()).all()]
        return bad or ["(their sum of squares overflows float32)"]

    def _check_labels(self, y):
        """Labels must be class ids in ``[0, num_classes)`` (checked on the host)."""
        if not self.num_classes:
            return
        if isinstance(y, mx.nd.NDArray):
            if y.context.device_type != "cpu":
                return  # would wait for the device; the losses check it there
            values = y.asnumpy()
        else:
            values = np.asarray(y)
        values = values.reshape(-1).astype(np.float64)
        bad = label_errors(values, self.num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"iteration {self.iteration + 1}: label {values[i]:g} of sample {i} of "
                f"the batch{self._batch_origin(i)} is not a class id in [0, "
                f"num_classes={self.num_classes}) ({int(bad.sum())} bad label(s) in "
                f"this batch of {values.size}); check the data's labels, or set "
                "num_classes to the number of classes in the data")

    def _batch_origin(self, i):
        """Where sample ``i`` of the batch just read came from, if the data says."""
        try:
            state = self.data.state_dict()
            epoch, batch = int(state["epoch"]), int(state["batch"]) - 1
            index = self.data.positions(epoch, batch)[i]
            return f" (data epoch {epoch}, batch {batch}, dataset index {index})"
        except Exception:  # a data source without positions
            return ""

    def _init_kvstore(self):
        """Create the kvstore and broadcast the weights before the first allreduce.

        Gluon does both lazily inside ``allreduce_grads``; with a distributed
        kvstore the weight pull of that broadcast and the first gradient
        push-pull use the same keys on the server and are independent engine
        operations, so a worker could pull a gradient sum as its weights.
        Waiting for the broadcast removes that race.
        """
        trainer = self.trainer
        if getattr(trainer, "_kv_initialized", True) and \
                not getattr(trainer, "_params_to_init", None):
            return
        trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        mx.nd.waitall()

    def prepare(self, X):
        """Finish the deferred initialisation of the network and head.

        Called by the first :meth:`train_step`; call it yourself to read the
        parameters before training. Runs the backbone and the head on one
        sample of ``X`` outside autograd (BatchNorm statistics are not
        touched), after reseeding MXNet with the run's seed.

        Parameters
        ----------
        X : NDArray
            A batch (only its first sample is used).

        Notes
        -----
        :class:`~fr_lib.model_zoo.NormDense` normalises its weight before
        ``FullyConnected``, so a parent graph cannot infer the weight's shape.
        """
        if self._shapes_known:
            return
        # reseeded so that the deferred initial values depend on the seed
        # only, not on what else used MXNet's generator since __init__
        self._seed_mxnet(self.config.seed)
        x = X[:1].as_in_context(self.ctx[0])
        emb = self.net(x)
        self.objective.init_shapes(emb[0] if isinstance(emb, (list, tuple)) else emb)
        self._shapes_known = True

    def _grads(self, ctx_index):
        return [p.list_grad()[ctx_index] for p in self.params.values()
                if p.grad_req != "null"]

    def _clip(self, sq, total):
        """Rescale the gradients to the global norm ``clip_global_norm``."""
        max_norm = self.config.clip_global_norm
        # the optimizer sees grad / total: clip that norm, in raw units
        norm = math.sqrt(sq) / total
        if norm > max_norm:
            factor = max_norm / norm
            for i in range(len(self.ctx)):
                for g in self._grads(i):
                    g *= factor
            for _, g in self._head_grads():
                g *= factor

    # -- checkpoints -------------------------------------------------------------
    def _state(self):
        state = {"iteration": self.iteration, "data": self.data.state_dict(),
                 "rng": {"seed": int(self.config.seed)}, "bad_steps": self.bad_steps,
                 "consecutive_bad": self._consecutive_bad,
                 "best_metric": self.best_metric, "best_iteration": self.best_iteration,
                 "config": self.config.to_dict(), "mxnet": mx.__version__,
                 "num_contexts": len(self.ctx),
                 "optimizer_params": self._optimizer_keys(),
                 "objective": self.objective.state_dict()}
        scaler = getattr(self.trainer, "_amp_loss_scaler", None)
        if scaler is not None:
            state["amp_loss_scale"] = float(scaler.loss_scale)
        return state

    def save_checkpoint(self):
        """Write a checkpoint of the current state (rank 0 only); returns its path.

        Nothing is written (None is returned) during a streak of skipped
        non-finite steps: the last good checkpoint stays the newest.

        Raises
        ------
        CheckpointError
            When the write fails; the previous checkpoints are intact.
        NonFiniteError
            When a weight, running statistic or optimizer state holds a
            non-finite value (a checkpoint is never written with one).
        """
        if not self.is_writer:
            return None
        if self._consecutive_bad:
            logger.warning("fr_lib: iteration %d: no checkpoint during a streak of %d "
                           "non-finite steps (the newest is still %s)", self.iteration,
                           self._consecutive_bad, self.checkpoints.latest())
            self._log({"event": "checkpoint_skipped", "iteration": self.iteration,
                       "consecutive_bad": self._consecutive_bad})
            return None
        bad = self._nonfinite_tensors()
        if bad:
            raise NonFiniteError(
                f"iteration {self.iteration}: not writing a checkpoint, these tensors "
                f"hold non-finite values: {', '.join(bad[:8])}"
                f"{' ...' if len(bad) > 8 else ''}; the newest checkpoint is "
                f"{self.checkpoints.latest() or 'none'}")
        files = {"backbone.params": self.net.save_parameters,
                 "trainer.states": self.trainer.save_states}
        if self.head is not None:
            files["head.params"] = self.head.save_parameters
        if self.partial_fc is not None:
            files["partial_fc.params"] = self.objective.save_head
        if len(self.ctx) > 1 and self._context_stats():
            files["context_stats.params"] = self._save_context_stats
        path = self.checkpoints.save(self.iteration, files, self._state())
        self.last_checkpoint = path
        self._log({"event": "checkpoint", "iteration": self.iteration,
                   "path": os.path.basename(path)})
        return path

    def _context_stats(self):
        """``structural name -> Parameter`` of the running statistics
        (BatchNorm's mean and variance: parameters without a gradient)."""
        out = {}
        for prefix, block in (("backbone.", self.net), ("head.", self.head)):
            if block is not None:
                for key, p in block._collect_params_with_prefix().items():
                    if p.grad_req == "null":
                        out.setdefault(prefix + key, p)
        return out

    def _save_context_stats(self, path):
        """Every context's own running statistics: ``save_parameters`` keeps
        their mean over the contexts, and a run resumed from that mean would
        not continue the per-context statistics of an uninterrupted one."""
        mx.nd.save(path, {f"{key}@{i}": arr for key, p in self._context_stats().items()
                          for i, arr in enumerate(p.list_data())})

    def _load_context_stats(self, path):
        saved = mx.nd.load(path)
        for key, p in self._context_stats().items():
            for i, arr in enumerate(p.list_data()):
                if f"{key}@{i}" in saved:
                    arr[:] = saved[f"{key}@{i}"].as_in_context(arr.context)

    def _optimizer_keys(self):
        """Structural name (``backbone.<path>``, ``head.<path>``) of each
        parameter, in the optimizer's index order.

        gluon.Trainer numbers the parameters by their *sorted global names*
        (``dense9_weight`` sorts after ``dense10_weight``), which depend on
        how many blocks the process made before; the structural names do not.
        """
        names = {}
        for prefix, block in (("backbone.", self.net), ("head.", self.head)):
            if block is None:
                continue
            for key, p in block._collect_params_with_prefix().items():
                names.setdefault(id(p), prefix + key)
        return [names.get(id(p), p.name) for p in self.trainer._params]

    def _reorder_optimizer_states(self, saved, path):
        """Renumber loaded optimizer states from the checkpoint's parameter
        order ``saved`` (see :meth:`_optimizer_keys`) to this trainer's."""
        if not saved:
            return  # an older checkpoint: same process layout assumed
        current = self._optimizer_keys()
        if saved == current:
            return
        if sorted(saved) != sorted(current):
            missing = sorted(set(saved) ^ set(current))[:6]
            raise CheckpointError(f"{path}: the optimizer state belongs to other "
                                  f"parameters (differing: {missing})")
        where = {name: i for i, name in enumerate(current)}
        move = {i: where[name] for i, name in enumerate(saved)}
        for updater in getattr(self.trainer, "_updaters", None) or []:
            updater.states = {move[k]: v for k, v in updater.states.items()}
            updater.states_synced = {move[k]: v for k, v in
                                     updater.states_synced.items()}
        opt = self.trainer._optimizer
        for counts in opt._all_index_update_counts.values():
            moved = {move.get(k, k): v for k, v in counts.items()}
            counts.clear()
            counts.update(moved)

    def load_checkpoint(self, path=None):
        """Restore the state of a checkpoint (default: the newest).

        Parameters
        ----------
        path : str, optional

        Returns
        -------
        Checkpoint

        Raises
        ------
        CheckpointError
            When it is missing or corrupt (the message names the file), or
            holds a non-finite value.
        """
        ckpt = self.checkpoints.load(path)
        state = ckpt.state
        try:
            self.net.load_parameters(ckpt.file("backbone.params"), ctx=self.ctx)
            if self.head is not None:
                self.head.load_parameters(ckpt.file("head.params"), ctx=self.ctx)
            if self.objective.partial_fc_head:
                self.objective.load_head(ckpt.file("partial_fc.params"))
            self.trainer.load_states(ckpt.file("trainer.states"))
            self._reorder_optimizer_states(state.get("optimizer_params"), ckpt.path)
            # after load_states: its kvstore initialisation copies context 0's
            # values of every parameter (running statistics too) to the others
            if "context_stats.params" in ckpt.meta.get("files", {}) and \
                    int(state.get("num_contexts", 0)) == len(self.ctx):
                self._load_context_stats(ckpt.file("context_stats.params"))
        except CheckpointError:
            raise
        except Exception as err:  # an MXNet error on a file that passed the checksum
            raise CheckpointError(f"{ckpt.path}: cannot load ({err})") from err
        bad = self._nonfinite_tensors()
        if bad:  # written before fr_lib checked: training on from it cannot work
            older = [os.path.basename(p) for it, p in self.checkpoints.list()
                     if it < ckpt.iteration]
            raise CheckpointError(
                f"{ckpt.path}: holds non-finite values ({', '.join(bad[:4])}"
                f"{' ...' if len(bad) > 4 else ''}); resume from an older checkpoint "
                f"(resume=<name>): {older or 'none'}")
        saved_seed = (state.get("rng") or {}).get("seed")
        if saved_seed is not None and int(saved_seed) != int(self.config.seed):
            raise ValueError(f"{ckpt.path}: the run was trained with seed={saved_seed}, "
                             f"this configuration has seed={self.config.seed}; resume "
                             f"with seed={saved_seed} to continue the same run")
        self.data.load_state_dict(state["data"])
        self.objective.load_state_dict(state.get("objective"))
        # (older checkpoints also stored NumPy's global state: not restored)
        self.iteration = int(state["iteration"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self._consecutive_bad = int(state.get("consecutive_bad", 0))
        self.best_metric = state.get("best_metric")
        self.best_iteration = state.get("best_iteration")
        scaler = getattr(self.trainer, "_amp_loss_scaler", None)
        if scaler is not None and "amp_loss_scale" in state:
            scaler.loss_scale = state["amp_loss_scale"]
        self.last_checkpoint = ckpt.path
        return ckpt

    # -- verification ------------------------------------------------------------
    def verify(self):
        """Verify on the pair sets; save the best model (rank 0).

        Returns
        -------
        dict
            ``name -> VerificationReport`` (empty without sets).
        """
        if self.evaluator is None:
            return {}
        results = self.evaluator.evaluate(self.net)
        self.results = results
        self._verified_at = self.iteration
        name = self.config.best_metric
        if name is not None and name not in results:
            raise ValueError(f"best_metric {name!r} is not one of the sets "
                             f"{list(results)}")
        metric = results[name].accuracy if name else \
            float(np.mean([r.accuracy for r in results.values()]))
        record = {"event": "verify", "iteration": self.iteration, "metric": metric}
        for k, r in results.items():
            record[k] = {"accuracy": r.accuracy, "std": r.std, "auc": r.auc, "eer": r.eer}
        # the weights of a bad streak are the restored good ones, but no
        # checkpoint is written during a streak (save_checkpoint)
        improved = (self.best_metric is None or metric > self.best_metric) and \
            not self._consecutive_bad and not (self.is_writer and self._nonfinite_tensors())
        if improved:
            self.best_metric, self.best_iteration = metric, self.iteration
            if self.is_writer:
                self.best_checkpoints.save(
                    self.iteration, {"backbone.params": self.net.save_parameters},
                    {"metric": metric, "iteration": self.iteration,
                     "results": {k: v for k, v in record.items()
                                 if isinstance(v, dict)}})
        record["best"] = improved
        self._log(record)
        return results

    @property
    def best_path(self):
        """Parameters file of the best backbone so far, or None."""
        latest = self.best_checkpoints.latest() if self.best_checkpoints else None
        return os.path.join(latest, "backbone.params") if latest else None

    # -- log ---------------------------------------------------------------------
    def _log(self, record):
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

    def _truncate_log(self, iteration):
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

    # -- the run directory -------------------------------------------------------
    def _resume_path(self):
        """The checkpoint ``config.resume`` names, or None (nothing to resume)."""
        r = self.config.resume
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

    def _previous_run(self):
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

    def _move_aside(self, paths):
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

    def _claim(self):
        """First fit(): resume, or check that ``out_dir`` holds no other run."""
        cfg = self.config
        path = self._resume_path()
        if path is not None:
            ckpt = self.load_checkpoint(path)
            if self.is_writer:
                # newer checkpoints belong to the abandoned continuation of
                # the run: pruning keeps the highest iterations, and resume
                # picks the newest, so they must not stay beside the new ones
                later = [p for m in (self.checkpoints, self.best_checkpoints)
                         for it, p in m.list() if it > self.iteration]
                if later:
                    where = self._move_aside(later)
                    logger.warning("fr_lib: resuming at iteration %d: the newer "
                                   "checkpoints %s moved to %s", self.iteration,
                                   [os.path.basename(p) for p in later], where)
            self._truncate_log(self.iteration)
            self._log({"event": "resume", "iteration": self.iteration,
                       "path": os.path.basename(ckpt.path)})
            return
        if not self.is_writer:
            return
        previous = self._previous_run()
        if previous and not (cfg.fresh or cfg.resume):
            raise RunDirectoryError(
                f"{self.out_dir} already holds a training run ({'; '.join(previous)}). "
                f"Continue it with resume=True (fr-train --set train.resume=true), or "
                f"start a new run there with fresh=True (fr-train --fresh), which "
                f"moves the old run to {self.out_dir}.old-<time>; or choose another "
                f"out_dir")
        old = [p for p in (self.log_path, self.checkpoints.directory)
               if os.path.exists(p)]
        if previous:
            where = self._move_aside(old)
            logger.warning("fr_lib: %s: the previous run (%s) moved to %s; starting "
                           "a new run", self.out_dir, "; ".join(previous), where)
            os.makedirs(self.checkpoints.directory, exist_ok=True)
        elif os.path.exists(self.log_path):  # no record in it: nothing to keep
            os.remove(self.log_path)

    def _begin(self):
        """Lock ``out_dir`` (rank 0) and, on the first call, claim it."""
        if self.is_writer:
            try:
                os.makedirs(self.checkpoints.directory, exist_ok=True)
            except OSError as err:
                raise RunDirectoryError(f"cannot create {self.checkpoints.directory} "
                                        f"({err}; {disk_free(self.out_dir)})") from err
            self._lock = RunLock(self.out_dir).acquire()
        try:
            if self.is_writer:
                self.checkpoints.remove_stale_temporaries()
                self.best_checkpoints.remove_stale_temporaries()
            if not self._claimed:
                self._claim()
                self._claimed = True
        except BaseException:
            self._end()
            raise

    def _end(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the loop ----------------------------------------------------------------
    def fit(self, max_iters=None):
        """Train until ``max_iters`` iterations are done (default ``config.max_iters``).

        Parameters
        ----------
        max_iters : int, optional

        Returns
        -------
        TrainResult

        Raises
        ------
        NonFiniteError
            After ``max_bad_steps`` consecutive non-finite steps.
        CheckpointError
            When resuming from a corrupt checkpoint, or when a save fails.
        RunDirectoryError
            (a CheckpointError) When ``out_dir`` holds another run and neither
            ``resume`` nor ``fresh`` is set, when another process trains
            into it (it is locked for the life of each call), or when the
            log cannot be written (a full disk).

        Notes
        -----
        The first call claims ``out_dir`` for this run (see
        ``TrainConfig.resume`` and ``TrainConfig.fresh``); later calls on the
        same trainer continue from where the previous one stopped.
        """
        cfg = self.config
        max_iters = cfg.max_iters if max_iters is None else int(max_iters)
        first = not self._claimed
        self._begin()
        try:
            return self._fit(max_iters, first)
        finally:
            self._end()

    def _fit(self, max_iters, first):
        from .callbacks import ProgressBar

        cfg = self.config
        if self.iteration == 0 and first:
            self._log({"event": "start", "iteration": 0, "config": cfg.to_dict(),
                       "contexts": [str(c) for c in self.ctx],
                       "engine": self.engine, "engine_reason": self.engine_reason})
            logger.info("fr_lib: training engine %s%s", self.engine,
                        f" ({self.engine_reason})" if self.engine_reason else "")
        start_time = time.perf_counter()
        step_time, step_images = 0.0, 0
        window_loss, window_n, window_images, window_time = 0.0, 0, 0, 0.0
        last_loss = None
        # the bar is a callback too (fr_lib.train.callbacks), first in line
        hooks = [ProgressBar(every=cfg.log_every, total=max_iters)] \
            if cfg.progress else []
        hooks += self.callbacks
        for callback in hooks:  # fr_lib.train.callbacks.Callback hooks
            if hasattr(callback, "on_begin"):
                callback.on_begin(self)
        try:
            while self.iteration < max_iters:
                t0 = time.perf_counter()
                X, y = self.data.next_batch()
                lr = self.schedule(self.iteration)
                loss = self.train_step(X, y)
                dt = time.perf_counter() - t0
                step_time += dt
                step_images += X.shape[0]
                window_time += dt
                window_images += X.shape[0]
                if loss is not None:
                    window_loss += loss
                    window_n += 1
                it = self.iteration
                if it % cfg.log_every == 0 or it == max_iters:
                    speed = window_images * self.num_workers / max(window_time, 1e-9)
                    mean = window_loss / window_n if window_n else None
                    last_loss = mean if mean is not None else last_loss
                    state = self.data.state_dict()
                    self._log({"event": "train", "iteration": it,
                               "epoch": state.get("epoch"), "loss": mean, "lr": lr,
                               "img_per_s": speed, "bad_steps": self.bad_steps})
                    window_loss, window_n, window_images, window_time = 0.0, 0, 0, 0.0
                for callback in hooks:
                    callback(self, {"iteration": it, "loss": loss, "lr": lr,
                                    "skipped": loss is None, "images": X.shape[0],
                                    "seconds": dt})
                if cfg.verify_every and it % cfg.verify_every == 0 and it < max_iters:
                    self.verify()
                if cfg.checkpoint_every and it % cfg.checkpoint_every == 0 \
                        and it < max_iters:
                    self.save_checkpoint()
        finally:
            if hooks and isinstance(hooks[0], ProgressBar):
                hooks[0].close()
        if self.evaluator is not None and self._verified_at != self.iteration:
            self.verify()
        if self.last_checkpoint is None or \
                not self.last_checkpoint.endswith(f"-{self.iteration:09d}"):
            self.save_checkpoint()
        seconds = time.perf_counter() - start_time
        self._log({"event": "end", "iteration": self.iteration,
                   "bad_steps": self.bad_steps, "seconds": seconds})
        result = TrainResult(
            iterations=self.iteration, bad_steps=self.bad_steps, last_loss=last_loss,
            best_metric=self.best_metric, best_iteration=self.best_iteration,
            results=self.results, checkpoint=self.last_checkpoint,
            log_path=self.log_path, seconds=seconds,
            images_per_second=step_images * self.num_workers / max(step_time, 1e-9))
        for callback in hooks:
            if hasattr(callback, "on_end"):
                callback.on_end(self, result)
        return result


def train(config, data=None, backbone=None, head=None, val_sets=None, callbacks=()):
    """Train from a config (the entry point of recipes and the command line).

    Book: introduced in ``chapter_training/partial-fc`` (大分类层与 Partial FC).

    Parameters
    ----------
    config : TrainConfig or dict
    data : data source, optional
        Default: ``config.data_source`` (:class:`RecordBatches` or DALI's
        :class:`~fr_lib.data.dali.DaliFaceIter`) over ``config.data``, sharded over
        the distributed workers.
    backbone, head, val_sets, callbacks
        See :class:`FaceTrainer`.

    Returns
    -------
    TrainResult
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if data is None:
        if not config.data:
            raise ValueError("give a data source or set config.data to a RecordIO "
                             "directory")

        source = str(config.data_source).lower()
        if source not in ("record", "dali"):
            raise ValueError(f"data_source must be 'record' or 'dali', got "
                             f"{config.data_source!r}")
        if source == "dali" and config.pk_k:
            raise ValueError(f"pk_k={config.pk_k}: P x K batches come from "
                             "data_source='record'; DALI reads the shard in its "
                             "own shuffled order")

        def data(num_parts, part_index):
            if source == "dali":
                from ..data.dali import DaliFaceIter
                return DaliFaceIter(config.data, batch_size=config.batch_size,
                                    shard_id=part_index, num_shards=num_parts,
                                    shuffle=True, rand_mirror=config.rand_mirror,
                                    seed=config.seed, last_batch="discard",
                                    check=config.data_check)
            sampler = None
            if config.pk_k:  # P×K batches (metric losses): P = batch_size // K
                from ..data.recordio import FaceRecordDataset
                from ..data.sampler import PKSampler
                _check_int("pk_k", config.pk_k, 1)
                if config.batch_size % config.pk_k:
                    raise ValueError(f"pk_k={config.pk_k} must divide batch_size="
                                     f"{config.batch_size} (P x K batches)")
                dataset = FaceRecordDataset(config.data, check=config.data_check)
                sampler = PKSampler(dataset.identity_index,
                                    config.batch_size // config.pk_k, config.pk_k,
                                    seed=config.seed, num_parts=num_parts,
                                    part_index=part_index)
                return RecordBatches(dataset, rand_mirror=config.rand_mirror,
                                     seed=config.seed, decode_threads=config.decode_threads,
                                     batch_sampler=sampler)
            return RecordBatches(config.data, batch_size=config.batch_size,
                                 rand_mirror=config.rand_mirror, seed=config.seed,
                                 decode_threads=config.decode_threads, num_parts=num_parts,
                                 part_index=part_index, check=config.data_check)
    trainer = FaceTrainer(config, data, backbone=backbone, head=head,
                          val_sets=val_sets, callbacks=callbacks)
    return trainer.fit()


def read_log(path):
    """Read a JSON-lines training log.

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    path : str
        ``log.jsonl``, or the run's ``out_dir``.

    Returns
    -------
    dict
        ``event -> list of records`` (``'train'``, ``'verify'``,
        ``'bad_step'``, ``'checkpoint'`` ...). A damaged line (cut by a
        crash) is skipped.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    events = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            events.setdefault(rec.get("event", "train"), []).append(rec)
    return events


def plot_log(path, axes=None):
    """Plot a training log: loss, learning rate and verification accuracy.

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    path : str
        ``log.jsonl`` or the run's ``out_dir``.
    axes : sequence of two matplotlib Axes, optional
        Where to draw the loss (with the learning rate on a twin axis) and
        the accuracy; a new figure when None.

    Returns
    -------
    numpy.ndarray of Axes
    """
    import matplotlib.pyplot as plt

    events = read_log(path)
    train_recs = [r for r in events.get("train", []) if r.get("loss") is not None]
    verify = events.get("verify", [])
    if axes is None:
        # constrained layout makes room for the twin axis's label between
        # the two panels (without it "learning rate" overlaps the accuracy axis)
        _, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = axes[0], axes[1]
    its = [r["iteration"] for r in train_recs]
    ax_loss.plot(its, [r["loss"] for r in train_recs], color="C0", label="loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(its, [r["lr"] for r in train_recs], color="C1", ls="--", label="lr")
    ax_lr.set_ylabel("learning rate")
    bad = events.get("bad_step", [])
    for r in bad:
        ax_loss.axvline(r["iteration"], color="red", alpha=0.3, lw=0.8)
    ax_loss.legend(handles=ax_loss.lines[:1] + ax_lr.lines[:1], loc="upper right")
    names = sorted({k for r in verify for k, v in r.items() if isinstance(v, dict)})
    for name in names:
        pts = [(r["iteration"], r[name]["accuracy"]) for r in verify if name in r]
        ax_acc.plot(*zip(*pts), marker="o", label=name)
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("verification accuracy")
    if names:
        ax_acc.legend(loc="lower right")
    ax_acc.grid(True, alpha=0.3)
    return np.asarray(axes)
