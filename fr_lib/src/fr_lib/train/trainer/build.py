"""What :class:`~fr_lib.train.trainer.FaceTrainer` builds from a
:class:`~fr_lib.train.trainer.TrainConfig` before the first step: the devices
and the kvstore, AMP, the objectives (head + loss, from the loss's contract),
the engine, the parameters' initial values and the ``gluon.Trainer`` (with
no weight decay on BatchNorm, biases and PReLU slopes if asked).

Each piece is a function of the config (and of what was built before it), so
that the trainer's constructor reads as the list of what it owns. The
refusals (:func:`loss_refusal`, :func:`partial_fc_refusal`) are also what
``fr-train --dry-run`` checks (:mod:`fr_lib.recipes`).
"""
import re
from collections import namedtuple

import mxnet as mx
from mxnet import gluon

from ...model_zoo import NativeTrainingView, native_training_support
from ...native.backend import check_engine, to_native
from ...utils.checks import check_int
from ..objective import Objective, objective_refusal
from ..schedule import make_schedule

__all__ = ["loss_refusal", "partial_fc_refusal", "exclude_from_weight_decay",
           "NO_WD_SUFFIXES"]

#: Parameter-name endings left out of weight decay by ``no_wd=True``:
#: BatchNorm scale and shift, biases, PReLU slopes.
NO_WD_SUFFIXES = ("_gamma", "_beta", "_bias", "_alpha")


def loss_refusal(name, pk=False, head="auto"):
    """Why :class:`~fr_lib.train.trainer.FaceTrainer` cannot train the loss
    ``name`` (a sentence naming the loss), or ``None``.  Read from the loss's contract
    (:class:`fr_lib.loss.LossContract`) by the objective layer
    (:mod:`fr_lib.train.objective`), which builds the head, the extra inputs
    and the running state each trainable loss needs; ``pk``: the batches are
    P×K (a :class:`~fr_lib.data.PKSampler`), as the metric losses need;
    ``head``: ``TrainConfig.head``."""
    why = objective_refusal(name, pk, head)
    return None if why is None else \
        f"loss {name!r} cannot be trained by FaceTrainer/fr-train: {why}"


def partial_fc_refusal(config, distributed=False):
    """Why the settings of ``config`` (a
    :class:`~fr_lib.train.trainer.TrainConfig` or its dict) cannot train with ``head='partial_fc'``, a sentence, or ``None`` (the
    loss itself is judged by :func:`loss_refusal`); ``distributed``: more
    than one worker process."""
    get = _getter(config)
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


def _getter(config):
    return config.get if isinstance(config, dict) else \
        (lambda key, default=None: getattr(config, key, default))


def make_config_schedule(config):
    """The learning-rate schedule ``config`` (a
    :class:`~fr_lib.train.trainer.TrainConfig` or its dict) asks for: its
    ``lr_mode`` over ``max_iters`` iterations, ``warmup_iters`` of them warm-up
    (:func:`fr_lib.train.schedule.make_schedule`)."""
    get = _getter(config)
    return make_schedule(
        get("lr_mode"), get("lr"), max_update=get("max_iters"),
        warmup_steps=get("warmup_iters"), warmup_begin_lr=get("warmup_begin_lr"),
        steps=get("lr_steps"), factor=get("lr_factor"), power=get("lr_power"),
        final_lr=get("final_lr"))


def schedule_refusal(config):
    """Why ``config``'s schedule options cannot make a schedule, a sentence
    that starts with ``lr_mode``, or ``None``. A short run with the default
    warm-up is the usual case: ``max_iters=2`` with ``warmup_iters=20``."""
    get = _getter(config)
    try:
        make_config_schedule(config)
    except (TypeError, ValueError) as err:
        return (f"lr_mode: the {get('lr_mode')!r} schedule refuses max_iters="
                f"{get('max_iters')}, warmup_iters={get('warmup_iters')}: {err} "
                "(max_update is max_iters, warmup_steps is warmup_iters; a decaying "
                "schedule needs warmup_iters < max_iters)")
    return None


def check_config(cfg, prebuilt_objective=False):
    """Refuse the values of ``cfg`` that no trainer can run with (ValueError)."""
    for name in ("max_iters", "batch_size"):
        check_int(name, getattr(cfg, name), 1)
    for name in ("checkpoint_every", "verify_every", "loss_warmup_iters"):
        check_int(name, getattr(cfg, name), 0)
    check_int("log_every", cfg.log_every, 1)
    check_int("max_bad_steps", cfg.max_bad_steps, 1)
    check_int("seed", cfg.seed, 0)
    why = schedule_refusal(cfg)
    if why is not None:
        raise ValueError(why)
    if cfg.fresh and cfg.resume:
        raise ValueError(f"fresh=True (start a new run, moving the old one aside) "
                         f"and resume={cfg.resume!r} (continue it) contradict each "
                         "other: set one of them")
    if str(cfg.head).lower() == "partial_fc" and not prebuilt_objective:
        why = partial_fc_refusal(cfg)
        if why is not None:
            raise ValueError(f"head='partial_fc': {why}")


def parse_context(c):
    """``'cpu(0)'``, ``'gpu(1)'`` or an ``mx.Context`` as an ``mx.Context``."""
    if isinstance(c, mx.Context):
        return c
    m = re.fullmatch(r"\s*(cpu|gpu)\s*\(\s*(\d+)\s*\)\s*", str(c))
    if not m:
        raise ValueError(f"bad context {c!r}: use 'cpu(0)', 'gpu(1)' or an mx.Context")
    return mx.Context(m.group(1), int(m.group(2)))


#: The devices of this worker and how gradients are summed.
Devices = namedtuple("Devices", "ctx kvstore num_workers rank hvd")


def setup_devices(cfg):
    """The :class:`Devices` of ``cfg.ctx`` (or :func:`~fr_lib.utils.get_devices`)
    and ``cfg.kvstore``; a distributed kvstore or Horovod says how many
    workers there are and which one this is."""
    kv = cfg.kvstore
    if kv == "horovod":
        try:
            import horovod.mxnet as hvd
        except ImportError:
            raise ImportError("kvstore='horovod' needs Horovod built with MXNet "
                              "support: HOROVOD_WITH_MXNET=1 pip install "
                              "horovod") from None
        hvd.init()
        ctx = [mx.gpu(hvd.local_rank())] if mx.context.num_gpus() else [mx.cpu()]
        return Devices(ctx, None, hvd.size(), hvd.rank(), hvd)
    if cfg.ctx:
        ctx = [parse_context(c) for c in cfg.ctx]
    else:
        from ...utils.device import get_devices
        ctx = get_devices(cfg.num_gpus, cfg.num_cpus)
    if kv is None or kv == "none":
        if len(ctx) > 1:
            raise ValueError("kvstore=None works with one context only")
        return Devices(ctx, None, 1, 0, None)
    if kv in ("device", "local"):
        return Devices(ctx, kv, 1, 0, None)
    if kv.startswith("dist"):
        store = mx.kv.create(kv)
        return Devices(ctx, store, store.num_workers, store.rank, None)
    raise ValueError(f"unknown kvstore {kv!r}; choose from 'device', 'local', "
                     "'dist_sync', 'dist_device_sync', 'horovod', None")


def init_amp(dtype, ctx):
    """Initialise ``mx.contrib.amp`` for ``dtype`` (process-wide); returns
    the ``amp`` module."""
    from mxnet.contrib import amp
    if dtype not in ("float16", "bfloat16"):
        raise ValueError(f"amp must be None, 'float16' or 'bfloat16', got {dtype!r}")
    if dtype == "float16" and any(c.device_type != "gpu" for c in ctx):
        raise ValueError("amp='float16' needs GPU contexts (MXNet has no fast "
                         "float16 kernels on CPU); use amp=None or 'bfloat16'")
    # Fully connected layers stay float32: the cosine logits of the head
    # (and the margin after them) need float32's resolution near cos = 1.
    from mxnet.contrib.amp import amp as amp_impl
    key = "float16" if dtype == "float16" else amp_impl.bfloat16
    low = [op for op in amp.list_lp16_ops(key) if op != "FullyConnected"]
    amp.init(target_dtype=dtype, target_precision_ops=low,
             fp32_ops=amp.list_fp32_ops(key) + ["FullyConnected"])
    return amp


def build_objectives(cfg, num_classes, head, pk, objective=None, partial_fc_args=None,
                     num_workers=1):
    """``(objective, warmup_objective or None)``: head + loss (+ extra inputs
    and running state) from the loss's contract, in one place
    (:mod:`fr_lib.train.objective`); ``objective``: a prebuilt one.

    ``pk``: the batches are P×K; ``partial_fc_args``: the arguments of the
    Partial FC head, used with ``head='partial_fc'`` (one worker process only)."""
    head_kind = str(cfg.head).lower()
    for name in () if objective is not None else \
            (cfg.loss, cfg.warmup_loss) if cfg.loss_warmup_iters else (cfg.loss,):
        why = loss_refusal(str(name).lower(), pk, head_kind)
        if why is not None:
            raise ValueError(why)
    if objective is None:
        pfc = None
        if head_kind == "partial_fc":
            if num_workers > 1:  # (a launcher's DMLC_* environment)
                raise ValueError(f"head='partial_fc': {partial_fc_refusal(cfg, True)}")
            pfc = partial_fc_args
        objective = Objective(cfg.loss, cfg.loss_kwargs, num_classes, head, pk,
                              head_kind, pfc, regularizer_weight=cfg.regularizer_weight)
    if not cfg.loss_warmup_iters:
        return objective, None
    if not objective.has_head:
        raise ValueError(f"loss_warmup_iters={cfg.loss_warmup_iters}: the loss "
                         f"{cfg.loss!r} has no head for warmup_loss "
                         f"{cfg.warmup_loss!r} to share; set loss_warmup_iters=0")
    warm_kwargs = dict(cfg.warmup_loss_kwargs)
    if cfg.warmup_loss.lower() == "normface" and "s" not in warm_kwargs \
            and hasattr(objective.loss, "_s"):
        warm_kwargs["s"] = objective.loss._s
    warm = Objective(cfg.warmup_loss, warm_kwargs, num_classes, objective.head)
    main_c, warm_c = objective.contract, warm.contract
    if (main_c.head, main_c.head_k_arg) != (warm_c.head, warm_c.head_k_arg):
        raise ValueError(f"warmup_loss {cfg.warmup_loss!r} needs another head "
                         f"than loss {cfg.loss!r} ({warm_c.head}, "
                         f"k={warm_c.head_k_arg} vs {main_c.head}, "
                         f"k={main_c.head_k_arg}); set loss_warmup_iters=0")
    return objective, warm


def initialize(block, ctx):
    """Put ``block``'s parameters on ``ctx``: initialised ones keep their
    values (e.g. pretrained), the others get MXNet's Xavier (gaussian, out, 2)."""
    params = block.collect_params()
    fresh = []
    for p in params.values():
        try:
            p.list_ctx()
        except RuntimeError:  # not initialised yet
            fresh.append(p)
            continue
        p.reset_ctx(ctx)
    if fresh:
        block.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out",
                                        magnitude=2), ctx=ctx)


def choose_engine(cfg, ctx, net):
    """('native' or 'mxnet', why not native) from ``cfg.engine``."""
    mode = check_engine(cfg.engine, "TrainConfig.engine")
    if mode == "mxnet":
        return "mxnet", "engine='mxnet'"
    why = ""
    if any(c.device_type != "cpu" for c in ctx):
        why = "the native training operators run on CPU only"
    elif cfg.amp is not None:
        why = "amp is set (the native operators are float32)"
    else:
        why = native_training_support(net)[1]
    if not why:
        return "native", ""
    if mode == "native":
        raise ValueError(f"engine='native' cannot be used: {why}")
    return "mxnet", why


def make_step_nets(cfg, engine, net, objectives, ctx):
    """The block each objective's step runs (backbone, or its native view,
    + head + loss), converted and hybridized as ``cfg`` says; None for a
    missing objective."""
    # native: the backbone's training pass on fr_lib's NHWC operators,
    # traced into the same graph as the head and the loss
    body = NativeTrainingView(net) if engine == "native" else net
    steps = [o.make_step(body) if o is not None else None for o in objectives]
    if str(cfg.engine).lower() != "mxnet":
        # the loss's and the layers' own native forms (fr_lib.native),
        # whether or not the whole backbone runs in the native view
        for step_net in steps:
            if step_net is not None:
                to_native(step_net, "auto", ctx)
    if cfg.hybridize:
        # Everything after a static_alloc graph must be hybridized too: an
        # imperative block behind it made a training step ~50x slower.
        net.hybridize(static_alloc=True)
        for step_net in steps:
            if step_net is not None:
                step_net.hybridize(static_alloc=True)
    return steps


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


def make_gluon_trainer(params, cfg, lr, devices, amp=None):
    """``(gluon.Trainer, needs_broadcast)`` for ``params``: the optimizer of
    ``cfg`` starting at ``lr``; Horovod's ``DistributedTrainer`` (whose weights
    are broadcast after the deferred initialisation) with ``kvstore='horovod'``."""
    opt = dict(cfg.optimizer_kwargs)
    opt.setdefault("learning_rate", lr)
    opt.setdefault("wd", cfg.wd)
    if cfg.optimizer.lower() in ("sgd", "nag"):
        opt.setdefault("momentum", cfg.momentum)
    if cfg.multi_precision:
        opt["multi_precision"] = True
    if cfg.clip_gradient:
        opt["clip_gradient"] = float(cfg.clip_gradient)
    if devices.hvd is not None:
        trainer = devices.hvd.DistributedTrainer(params, cfg.optimizer, opt)
        broadcast = True
    else:
        trainer = gluon.Trainer(params, cfg.optimizer, opt,
                                kvstore=devices.kvstore, update_on_kvstore=False)
        broadcast = False
    if amp is not None:
        amp.init_trainer(trainer)
    return trainer, broadcast
