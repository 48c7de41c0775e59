"""What goes into a training run and what comes out:
:class:`~fr_lib.train.trainer.TrainConfig` (with its renamed options) and
:class:`~fr_lib.train.trainer.TrainResult`.

A :class:`~fr_lib.train.trainer.TrainConfig` is plain values (a YAML recipe
maps onto it, see :mod:`fr_lib.recipes`);
:class:`~fr_lib.train.trainer.FaceTrainer` builds everything else from it.
"""
import dataclasses
import functools
import warnings
from dataclasses import dataclass, field

from ...utils.deprecation import renamed_attribute

__all__ = ["TrainConfig", "TrainResult", "RENAMED_OPTIONS", "renamed_options"]


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
    regularizer_weight : float or None
        λ of a regulariser (a loss whose contract sets
        ``regularizer_weight``: ``center``, ``ring``), which trains as
        ``softmax + λ·loss`` on a ``Dense`` head
        (:class:`~fr_lib.train.objective.RegularisedObjective`); None: the
        contract's default (0.1 and 0.01). Refused for the other losses.
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
        ``.bin`` paths (or names of ``.bin`` files in ``data``) to verify on
        (the trainer adds a :class:`~fr_lib.train.callbacks.Verification`
        callback for them).
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
        :data:`~fr_lib.train.trainer.build.NO_WD_SUFFIXES`.
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
    regularizer_weight: float = None
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


#: The renamed options of :class:`~fr_lib.train.trainer.TrainConfig`, as
#: ``old -> new``. The old names still work (constructor,
#: :meth:`~fr_lib.train.trainer.TrainConfig.from_dict`, YAML recipes,
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
        warnings.warn(f"{where}: the training option {key!r} is now called {new!r} "
                      f"({key!r} will be removed)", DeprecationWarning,
                      stacklevel=stacklevel)
        values[new] = values.pop(key)
    return values


def _accept_renamed(init):
    """Wrap the dataclass ``__init__`` so that the old option names still work."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **renamed_options(kwargs, "TrainConfig", stacklevel=4))
    return __init__


TrainConfig.__init__ = _accept_renamed(TrainConfig.__init__)
for _old, _new in RENAMED_OPTIONS.items():
    setattr(TrainConfig, _old, renamed_attribute("TrainConfig", _old, _new, settable=True))


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

