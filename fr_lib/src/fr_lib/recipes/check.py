"""What a run would refuse later, checked before it starts
(:func:`check_recipe`, also ``fr-train --dry-run``), and the paths a recipe
names resolved as the run resolves them.
"""
import inspect
import os
import re

from .schema import _unknown

__all__ = ["check_recipe"]


def _resolve_data(data):
    if not data:
        return data
    from ..data.root import get_data_root, resolve_data_dir
    data = os.path.expanduser(str(data).replace("{data_root}", get_data_root()))
    if not os.path.exists(data) and os.path.isdir(resolve_data_dir(data, False)):
        data = resolve_data_dir(data)  # emore/ under its old name: warns
    return data


def _resolve_resume(train):
    """``resume`` given as a checkpoint name (``ckpt-000000070``, as error messages
    print it) means that checkpoint of the run's own ``out_dir``."""
    resume = train.get("resume")
    if isinstance(resume, str) and resume and \
            not os.path.isdir(os.path.expanduser(resume)):
        out_dir = train.get("out_dir") or _train_defaults()["out_dir"]
        inside = os.path.join(os.path.expanduser(out_dir), "checkpoints",
                              os.path.basename(resume))
        if os.path.isdir(inside):
            return inside
        return None
    return resume


def _check_kwargs(option, factory, kwargs):
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    bad = [k for k in kwargs if k not in names]
    if bad:
        return _unknown(option, str(bad[0]), names, "keyword argument")
    return None


def check_recipe(recipe):
    """Check what the run would refuse later, without training or loading data.

    ``fr-train`` runs it before anything is generated or trained, and so does
    ``--dry-run``: the names of the backbone, the loss and warm-up loss, the
    schedule, optimizer, kvstore, amp and engine; the keyword arguments of
    the backbone and the losses; the contexts; integer ranges;
    ``best_metric`` among the verification sets; that ``train.data`` holds
    ``train.rec`` (or that the ``synthetic`` section will write it), that each
    verification set exists (or will be written), that a ``resume``
    checkpoint exists and that ``out_dir`` can be created. The backbone and
    the losses are constructed to check their arguments (no weights are
    allocated before ``initialize``).

    Parameters
    ----------
    recipe : dict
        As returned by :func:`load_recipe`.

    Raises
    ------
    ValueError
        Listing every problem found, each naming its option.
    """
    import mxnet as mx
    from ..loss import LOSSES, contract_of
    from ..model_zoo import MODELS
    from ..train.schedule import SCHEDULES
    cfg = _train_defaults()
    cfg.update(recipe["train"])
    errors = []

    def lookup(option, registry, kwargs_option):
        try:
            factory = registry.lookup(cfg[option])
        except ValueError as err:
            errors.append(f"train.{option}: {err}")
            return
        kwargs = cfg[kwargs_option] or {}
        if registry is LOSSES and contract_of(cfg[option]).needs_num_classes:
            # the trainer passes num_classes (the contract says it is needed):
            # the recipe's, else the data's, unknown until it is read; 100
            # stands for it (L2-Softmax, for one, needs at least 3 classes)
            kwargs = dict(kwargs, num_classes=kwargs.get("num_classes")
                          or cfg.get("num_classes") or 100)
        msg = _check_kwargs(f"train.{kwargs_option}", factory, kwargs)
        if msg:
            errors.append(msg)
            return
        try:  # a Gluon block is cheap before initialize(): no weights exist yet
            factory(**kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            errors.append(f"train.{kwargs_option}: {cfg[option]!r} refuses {kwargs} "
                          f"({' '.join(str(err).split())})")

    lookup("backbone", MODELS, "backbone_kwargs")
    lookup("loss", LOSSES, "loss_kwargs")
    if cfg["loss_warmup_iters"]:
        lookup("warmup_loss", LOSSES, "warmup_loss_kwargs")
    # the loss contract (trainable? with this head?)
    from ..train.trainer import loss_refusal, partial_fc_refusal, schedule_refusal
    head = str(cfg.get("head") or "auto").lower()
    for option in ("loss", "warmup_loss") if cfg["loss_warmup_iters"] else ("loss",):
        if cfg[option] in LOSSES:
            why = loss_refusal(str(cfg[option]).lower(), pk=bool(cfg.get("pk_k")),
                               head=head)
            if why:
                errors.append(f"train.{option}: {why}")
    if head == "partial_fc":
        why = partial_fc_refusal(cfg)
        if why:
            errors.append(f"train.head: 'partial_fc': {why}")
    if cfg["loss_warmup_iters"] and cfg["loss"] in LOSSES \
            and contract_of(cfg["loss"]).head is None:
        errors.append(f"train.loss_warmup_iters: loss {cfg['loss']!r} has no head for "
                      f"warmup_loss {cfg['warmup_loss']!r} to share; set it to 0")
    weight = cfg.get("regularizer_weight")
    if weight is not None and cfg["loss"] in LOSSES:  # λ of softmax + λ·regulariser
        if contract_of(cfg["loss"]).regularizer_weight is None:
            errors.append(f"train.regularizer_weight: loss {cfg['loss']!r} is not a "
                          "regulariser (center, ring); remove the option")
        elif isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0 < weight < float("inf"):
            errors.append(f"train.regularizer_weight: must be a positive number, "
                          f"got {weight!r}")
    if str(cfg.get("data_source", "record")).lower() not in ("record", "dali"):
        errors.append(f"train.data_source: {cfg['data_source']!r} is not 'record' "
                      "(RecordIO batches) or 'dali' (NVIDIA DALI)")
    elif str(cfg.get("data_source")).lower() == "dali" and cfg.get("pk_k"):
        errors.append("train.data_source: 'dali' does not draw P x K batches; "
                      "set train.pk_k=0 or train.data_source=record")
    if str(cfg["lr_mode"]).lower() not in SCHEDULES:
        errors.append(f"train.lr_mode: unknown schedule {cfg['lr_mode']!r}; choose "
                      f"from {sorted(SCHEDULES)}")
    optimizers = mx.optimizer.Optimizer.opt_registry
    if str(cfg["optimizer"]).lower() not in optimizers:
        errors.append(f"train.optimizer: unknown optimizer {cfg['optimizer']!r}; "
                      f"choose from {sorted(optimizers)}")
    for name, low in (("max_iters", 1), ("batch_size", 1), ("checkpoint_every", 0),
                      ("num_cpus", 1),
                      ("verify_every", 0), ("loss_warmup_iters", 0), ("log_every", 1),
                      ("max_bad_steps", 1), ("val_batch_size", 1), ("keep_last", 1),
                      ("decode_threads", 0), ("warmup_iters", 0), ("num_classes", 0)):
        if cfg[name] is not None and cfg[name] < low:
            errors.append(f"train.{name}: must be >= {low}, got {cfg[name]}")
    for name in ("lr", "wd"):
        if cfg[name] < 0:
            errors.append(f"train.{name}: must be >= 0, got {cfg[name]}")
    said = ("train.max_iters:", "train.warmup_iters:", "train.lr:", "train.lr_mode:")
    if str(cfg["lr_mode"]).lower() in SCHEDULES and not any(
            e.startswith(said) for e in errors):
        # the schedule's own rules (e.g. a decaying schedule warms up for fewer
        # than max_iters iterations), checked by building it, as the trainer will
        why = schedule_refusal(cfg)
        if why:
            errors.append(f"train.{why}")
    if str(cfg["engine"]).lower() not in ("auto", "native", "mxnet"):
        errors.append(f"train.engine: expected 'auto', 'native' or 'mxnet', got "
                      f"{cfg['engine']!r}")
    kv = cfg["kvstore"]
    distributed = str(kv).startswith("dist") or kv == "horovod"
    if kv not in (None, "none", "device", "local", "dist_sync", "dist_device_sync",
                  "dist_async", "horovod"):
        errors.append(f"train.kvstore: unknown kvstore {kv!r}; choose from 'device', "
                      "'local', 'dist_sync', 'dist_device_sync', 'horovod', null")
    # the devices the run would use (train.ctx, else num_gpus/num_cpus)
    contexts = [str(c).replace(" ", "") for c in cfg["ctx"] or []]
    ctx_re = re.compile(r"(cpu|gpu)\(\d+\)")
    for c in contexts:
        if not ctx_re.fullmatch(c):
            errors.append(f"train.ctx: bad context {c!r}; use 'cpu(0)' or 'gpu(1)'")
    asked = [c for c in contexts if ctx_re.fullmatch(c) and c.startswith("gpu")]
    if asked and kv != "horovod":   # horovod gives each process its own GPU
        from ..utils.device import list_gpus
        usable = [str(g) for g in list_gpus()]
        missing = [c for c in asked if c not in usable]
        if missing:
            errors.append(f"train.ctx: {missing} cannot be used here: usable GPUs "
                          f"{usable} (a CPU-only MXNet, no CUDA device, or a GPU "
                          "MXNet's kernels do not run on); use ['cpu(0)'] or see the "
                          "install chapter")
    if not contexts and kv != "horovod" and cfg["num_cpus"] >= 1:
        import logging
        from ..utils.device import get_devices
        log = logging.getLogger("fr_lib")
        was, log.disabled = log.disabled, True  # the run itself reports the devices
        try:
            contexts = [str(c) for c in get_devices(cfg["num_gpus"], cfg["num_cpus"])]
        except ValueError as err:
            errors.append(f"train.num_gpus: {err}")
        finally:
            log.disabled = was
    if kv in (None, "none") and len(contexts) > 1:
        errors.append(f"train.kvstore: null works with one context only (contexts: "
                      f"{contexts})")
    if contexts and cfg["batch_size"] < len(contexts):
        errors.append(f"train.batch_size: {cfg['batch_size']} cannot be split over "
                      f"{len(contexts)} contexts")
    if cfg["amp"] not in (None, "float16", "bfloat16"):
        errors.append(f"train.amp: expected null, 'float16' or 'bfloat16', got "
                      f"{cfg['amp']!r}")
    elif cfg["amp"] == "float16" and contexts and \
            not all(c.startswith("gpu") for c in contexts):
        errors.append(f"train.amp: 'float16' needs GPU contexts (the run would use "
                      f"{contexts}); use null or 'bfloat16'")
    names = [os.path.splitext(os.path.basename(str(v)))[0] for v in cfg["val_sets"]]
    if cfg["best_metric"] is not None and cfg["best_metric"] not in names:
        errors.append(f"train.best_metric: {cfg['best_metric']!r} is not one of the "
                      f"verification sets {names}")
    # files the run reads
    data = _resolve_data(cfg["data"])
    synth = recipe.get("synthetic") or None
    will_write = bool(synth and data and
                      not os.path.isfile(os.path.join(data, "train.rec")))
    if not data:
        errors.append("train.data: not set (a RecordIO folder with train.rec)")
    elif not will_write:
        if not os.path.isdir(data):
            errors.append(f"train.data: {data}: no such folder (and no synthetic "
                          "section to generate it)")
        elif not os.path.isfile(os.path.join(data, "train.rec")):
            errors.append(f"train.data: {data} has no train.rec (a RecordIO folder "
                          "holds train.rec, train.idx and property)")
    written = set()
    if will_write and (synth.get("num_val_pairs", 600) or 0) > 0:
        written.add(synth.get("val_name", "synth_val"))
    for entry in cfg["val_sets"]:
        entry = str(entry)
        if entry in written or os.path.exists(os.path.expanduser(entry)):
            continue
        if data and os.path.exists(os.path.join(data, entry + ".bin")):
            continue
        where = os.path.join(data, entry + ".bin") if data else "a .bin in train.data"
        errors.append(f"train.val_sets: {entry!r} is neither a file nor {where}")
    if isinstance(cfg["resume"], str) and cfg["resume"] and \
            _resolve_resume(cfg) is None:
        errors.append(f"train.resume: {cfg['resume']}: no such checkpoint folder, "
                      "neither as a path nor in "
                      f"{os.path.join(cfg['out_dir'], 'checkpoints')}")
    out = os.path.abspath(os.path.expanduser(str(cfg["out_dir"])))
    parent = out
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        errors.append(f"train.out_dir: {parent} is a file, so {out} cannot be a "
                      "run folder")
    elif not os.access(parent, os.W_OK | os.X_OK):
        errors.append(f"train.out_dir: {parent} is not writable")
    elif not (cfg.get("fresh") or cfg["resume"] or distributed) and _holds_run(out):
        # (distributed: every worker runs this check, but only rank 0 claims
        # out_dir, and the others must not see its new run as an old one)
        errors.append(f"train.out_dir: {out} already holds a training run; continue "
                      "it with --set train.resume=true, start over with --fresh (the "
                      "old run is moved aside), or choose another --out")
    if errors:
        raise ValueError("; ".join(errors))
    return recipe


def _holds_run(out):
    """Whether ``out`` has a non-empty log or a checkpoint (what the trainer refuses
    to mix with a new run)."""
    log = os.path.join(out, "log.jsonl")
    if os.path.isfile(log) and os.path.getsize(log) > 0:
        return True
    ckpts = os.path.join(out, "checkpoints")
    return os.path.isdir(ckpts) and any(
        re.fullmatch(r"(ckpt|best)-\d+", n) for n in os.listdir(ckpts))

def _train_defaults():
    from ..train.trainer import TrainConfig
    return TrainConfig().to_dict()
