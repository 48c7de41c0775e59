"""YAML training recipes and the ``fr-train`` command line.

A recipe is one YAML file with these top-level keys:

``name``, ``description``
    Free text.
``published``
    The results the recipe should reproduce and where they come from
    (documentation only; nothing reads them).
``synthetic``
    Optional. Arguments of :func:`fr_lib.data.synthetic.write_dataset`: the
    training set is generated into ``train.data`` first when that folder
    has no ``train.rec`` yet.
``train``
    The fields of :class:`fr_lib.train.trainer.TrainConfig`.
``quick``
    Optional overrides (same layout: ``synthetic``/``train``) applied in
    quick mode (``FR_QUICK=1`` or ``--quick``), so a big recipe can be
    smoke-tested on a laptop.

``train.data`` may start with ``{data_root}``, replaced by
:func:`fr_lib.data.root.get_data_root` (``~/.mxnet/datasets/face`` unless
``FR_DATA_ROOT`` is set). Every value can be overridden on the command line with ``--set
train.lr=0.05`` (the value is parsed as YAML, so ``--set
train.lr_steps=[100,200]`` works). The recipes shipped with the package are
listed by :func:`list_recipes` and found by name.

Values are typed by the schema (the fields of
:class:`~fr_lib.train.trainer.TrainConfig` and the arguments of
:func:`~fr_lib.data.synthetic.write_dataset`): numbers are numbers whatever
YAML 1.1 thinks (``1e-3`` is the float 0.001, ``"64"`` for an integer option
is 64), unknown keys are refused with the closest valid names, and every
error names the option and the type it expects.
:func:`check_recipe` then checks what the run would refuse later (names of
backbones, losses, schedules and optimizers, their keyword arguments, files
that must exist); ``fr-train --dry-run`` runs the same checks.
"""
import copy
import dataclasses
import difflib
import inspect
import os
import re
import sys

import yaml

from ..cli import ArgumentParser, add_debug_flag, run_main
from ..utils.quick import quick_mode

__all__ = ["RECIPE_DIR", "list_recipes", "recipe_path", "load_recipe",
           "apply_override", "validate_recipe", "check_recipe", "prepare_data",
           "train_main"]

RECIPE_DIR = os.path.dirname(os.path.abspath(__file__))
_TOP_KEYS = {"name", "description", "published", "synthetic", "train", "quick"}


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: ``1e-3`` and ``5E4`` are floats (YAML 1.1,
    and so PyYAML, reads an exponent without a decimal point as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml_load(text):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# -- the schema ------------------------------------------------------------------------
_NAMES = {int: "an integer", float: "a number", bool: "true or false",
          str: "a string", list: "a list, e.g. [a, b]",
          dict: "a mapping, e.g. {key: value}"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?"
                        r"|[-+]?(?:inf|infinity|nan)", re.IGNORECASE)
# options whose default is not None but which take null (kvstore: no kvstore)
_NULLABLE = {"kvstore"}
# element types of list options
_ELEMENTS = {"train.lr_steps": int, "train.val_sets": str, "train.ctx": str}


def _coerce(option, value, kind, optional):
    """``value`` as ``kind`` (int, float, bool, str, list, dict; None: any)."""
    if value is None:
        if optional or kind is None:
            return None
        raise ValueError(f"{option}: expected {_NAMES[kind]}, got null")
    if kind is None:
        return value
    bad = ValueError(f"{option}: expected {_NAMES[kind]}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad
    if kind in (int, float):
        if isinstance(value, bool):
            raise bad
        number = value
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            if not _NUMBER_RE.fullmatch(text):
                raise bad
            try:
                number = int(text)
            except ValueError:
                number = float(text)
        if not isinstance(number, (int, float)):
            raise bad
        if kind is float:
            return float(number)
        if isinstance(number, float):
            if not number.is_integer():
                raise bad
            number = int(number)
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)  # e.g. a folder named 2024
        raise bad
    if kind is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        elem = _ELEMENTS.get(option)
        if elem is not None:
            value = [_coerce(f"{option}[{i}]", v, elem, False)
                     for i, v in enumerate(value)]
        return value
    if kind is dict and not isinstance(value, dict):
        raise bad
    return value


def _train_schema():
    """``name -> (type or None, optional)`` from the fields of TrainConfig."""
    from ..train.trainer import TrainConfig
    by_name = {"int": int, "float": float, "bool": bool, "str": str, "list": list,
               "dict": dict}
    schema = {}
    for f in dataclasses.fields(TrainConfig):
        kind = f.type if isinstance(f.type, type) else by_name.get(str(f.type))
        schema[f.name] = (kind if kind in _NAMES else None,
                          f.default is None or f.name in _NULLABLE)
    return schema


def _synthetic_schema():
    """``name -> (type or None, optional)`` from write_dataset's keyword defaults."""
    from ..data.synthetic import write_dataset
    schema = {}
    for name, p in inspect.signature(write_dataset).parameters.items():
        if name in ("out_dir", "progress") or p.default is inspect.Parameter.empty:
            continue
        d = p.default
        kind = type(d) if type(d) in _NAMES else \
            (int if name.startswith("num_") else None)
        schema[name] = (kind, d is None)
    return schema


def _unknown(section, key, valid, what):
    if ":" in key and key.split(":", 1)[0].strip() in valid:
        # YAML reads {a:1} as the key 'a:1' (a mapping needs ': ' with a space)
        return (f"{section}.{key}: unknown {what}; write "
                f"'{key.split(':', 1)[0].strip()}: {key.split(':', 1)[1].strip()}' "
                "(YAML needs a space after the colon)")
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        f"; valid: {', '.join(sorted(valid))}"
    return f"{section}.{key}: unknown {what}{hint}"


def _typed_section(recipe, section, schema, what, errors):
    values = recipe[section]
    for key in list(values):
        if key not in schema:
            errors.append(_unknown(section, str(key), schema, what))
            continue
        try:
            values[key] = _coerce(f"{section}.{key}", values[key], *schema[key])
        except ValueError as err:
            errors.append(str(err))


def validate_recipe(recipe):
    """Type the ``train`` and ``synthetic`` sections of a recipe in place.

    Numbers written as strings (``'1e-3'``, ``'64'``) become numbers where the
    schema wants one; an integral float becomes an integer where an integer
    is expected.

    Returns
    -------
    dict
        ``recipe``.

    Raises
    ------
    ValueError
        Listing every problem, each as ``section.key: expected <type>, got
        <value>`` or ``section.key: unknown ...; did you mean ...?``.
    """
    errors = []
    if recipe.get("train") is None:
        recipe["train"] = {}
    if not isinstance(recipe["train"], dict):
        errors.append(f"train: expected a mapping of training options (train.lr, "
                      f"train.batch_size, ...), got {recipe['train']!r}")
    else:
        # old names of renamed options (train.num_workers, train.contexts)
        from ..train.trainer import renamed_options
        try:
            recipe["train"] = renamed_options(recipe["train"], "recipe", stacklevel=4)
        except ValueError as err:
            errors.append(f"train: {err}")
        _typed_section(recipe, "train", _train_schema(), "training option", errors)
    synth = recipe.get("synthetic")
    if synth is not None and not isinstance(synth, dict):
        errors.append(f"synthetic: expected a mapping of write_dataset arguments or "
                      f"null, got {synth!r}")
    elif synth:
        _typed_section(recipe, "synthetic", _synthetic_schema(),
                       "argument of write_dataset", errors)
    if errors:
        raise ValueError("; ".join(errors))
    return recipe


def list_recipes():
    """Names of the recipes shipped with fr_lib (``fr-train NAME`` runs one).

    Book: introduced in ``chapter_training/emore-recipe`` (emore 上的完整配方).
    """
    return sorted(f[:-5] for f in os.listdir(RECIPE_DIR) if f.endswith(".yaml"))


def recipe_path(name_or_path):
    """The file of a recipe given by path or by the name of a shipped one.

    Raises
    ------
    FileNotFoundError
        Neither a file nor a shipped recipe; the message lists the shipped ones.
    """
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(RECIPE_DIR, name_or_path + ".yaml")
    if os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(f"recipe {name_or_path!r}: no such file and no shipped "
                            f"recipe of that name (shipped: {', '.join(list_recipes())})")


def _merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(recipe, assignment):
    """Apply one ``section.key=value`` override (value parsed as YAML) in place.

    Raises
    ------
    ValueError
        Malformed assignment, unknown top-level section, or a value that is
        not valid YAML.
    """
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r}: expected section.key=value, "
                         "e.g. train.lr=0.05")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in _TOP_KEYS or not all(parts):
        raise ValueError(f"override {assignment!r}: the key must start with one of "
                         f"{sorted(_TOP_KEYS)} and name a field, e.g. train.lr=0.05")
    node = recipe
    for i, p in enumerate(parts[:-1]):
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ValueError(f"override {assignment!r}: {'.'.join(parts[:i + 1])} is "
                             f"not a section (it is {node!r})")
    try:
        node[parts[-1]] = _yaml_load(value)
    except yaml.YAMLError as e:
        raise ValueError(f"override {assignment!r}: the value is not valid YAML "
                         f"({' '.join(str(e).split())})") from None
    return recipe


def load_recipe(name_or_path, overrides=(), quick=None):
    """Read a recipe, apply quick-mode overrides and ``--set`` overrides.

    Book: introduced in ``chapter_backbone/comparison`` (骨干网络比较).

    Parameters
    ----------
    name_or_path : str
    overrides : iterable of str
        ``section.key=value`` assignments, applied last.
    quick : bool or None
        Apply the recipe's ``quick`` section; None follows
        :func:`fr_lib.utils.quick_mode`.

    Returns
    -------
    dict
        With ``synthetic`` (or None) and ``train`` sections; the ``train``
        keys are checked against :class:`~fr_lib.train.trainer.TrainConfig`.

    Raises
    ------
    ValueError
        The file is not a YAML mapping, has unknown sections, unknown
        options or values of the wrong type (:func:`validate_recipe`); the
        message names the file and the option.
    """
    path = recipe_path(name_or_path)
    with open(path, encoding="utf-8") as f:
        try:
            recipe = _yaml_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") \
                from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping with a 'train' "
                         "section")
    unknown = sorted(set(recipe) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; valid: "
                         f"{sorted(_TOP_KEYS)}")
    # a recipe reproduces a run: only an explicit FR_QUICK shrinks it
    quick = quick_mode(default=False) if quick is None else quick
    if quick and recipe.get("quick"):
        if not isinstance(recipe["quick"], dict):
            raise ValueError(f"{path}: quick: expected a mapping (synthetic/train "
                             f"overrides), got {recipe['quick']!r}")
        recipe = _merge(recipe, recipe["quick"])
    recipe.pop("quick", None)
    recipe.setdefault("train", {})
    recipe.setdefault("synthetic", None)
    for a in overrides:
        apply_override(recipe, a)
    unknown = sorted(set(recipe) - _TOP_KEYS - {"path"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; valid: "
                         f"{sorted(_TOP_KEYS)}")
    from ..train.trainer import TrainConfig
    try:
        validate_recipe(recipe)
        TrainConfig.from_dict(recipe["train"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    recipe["path"] = path
    return recipe


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
            # the trainer passes num_classes (the contract says it is needed)
            kwargs = dict(kwargs, num_classes=kwargs.get("num_classes", 2))
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
    from ..train.trainer import loss_refusal, partial_fc_refusal
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


def _heartbeat_callbacks(every=5.0):
    """Under ``python -m fr_lib.train.launch`` (``FR_HEARTBEAT_FILE`` set): touch
    the heartbeat file after a step, at most every ``every`` seconds, so a
    silent worker (``progress: false``) is not taken for a stuck one."""
    if not os.environ.get("FR_HEARTBEAT_FILE"):
        return ()
    import time
    from ..train.launch import heartbeat
    last = [0.0]

    def beat(trainer, record):
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            heartbeat()
    return (beat,)


def _train_defaults():
    from ..train.trainer import TrainConfig
    return TrainConfig().to_dict()



def prepare_data(recipe, progress=True):
    """Generate the synthetic training set of a recipe if it is not there yet.

    Returns
    -------
    str or None
        The data folder (``train.data``), or None when the recipe names none.
    """
    data = recipe["train"].get("data")
    if data:
        data = _resolve_data(data)
        recipe["train"]["data"] = data
    synth = recipe.get("synthetic")
    if synth and data and not os.path.isfile(os.path.join(data, "train.rec")):
        from ..data.synthetic import write_dataset
        print(f"[fr-train] generating synthetic identities into {data}")
        write_dataset(data, progress=progress, **synth)
    return data


@run_main("fr-train")
def train_main(argv=None):
    """Entry point of ``fr-train`` (see ``fr-train --help``)."""
    parser = ArgumentParser(
        prog="fr-train",
        description="Train a face model from a YAML recipe. Shipped recipes: "
                    + ", ".join(list_recipes()) + ". Values are typed by the "
                    "configuration schema (1e-3 is a number, unknown keys are "
                    "refused); errors are one line on stderr with exit code 2.")
    parser.add_argument("recipe", nargs="?", help="a recipe file or shipped name")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (YAML syntax, typed by the "
                             "schema: train.lr=1e-3 is a number); repeatable")
    parser.add_argument("--out", help="shortcut for --set train.out_dir=OUT")
    parser.add_argument("--fresh", action="store_true",
                        help="start a new run even if the out dir holds one: the old "
                             "run is moved to <out>.old-<time> first (shortcut for "
                             "--set train.fresh=true)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="apply the recipe's quick section (default: FR_QUICK)")
    mode.add_argument("--full", action="store_true",
                      help="ignore the quick section even if FR_QUICK=1")
    parser.add_argument("--list", action="store_true", help="list shipped recipes")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the recipe as the run would (types, unknown keys, "
                             "model/loss names and arguments, files that must exist), "
                             "print it resolved and stop")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.list:
        for name in list_recipes():
            r = load_recipe(name, quick=False)
            print(f"{name:32s} {r.get('description', '').strip().splitlines()[0]}")
        return 0
    if not args.recipe:
        parser.error("give a recipe (a file or one of: " + ", ".join(list_recipes()) + ")")
    quick = True if args.quick else False if args.full else None
    recipe = load_recipe(args.recipe, args.overrides, quick=quick)
    if args.out:
        recipe["train"]["out_dir"] = args.out  # a path, never parsed as YAML
    if args.fresh:
        recipe["train"]["fresh"] = True
    try:
        check_recipe(recipe)
    except ValueError as e:
        raise ValueError(f"{recipe['path']}: {e}") from None
    if isinstance(recipe["train"].get("resume"), str):
        recipe["train"]["resume"] = _resolve_resume(recipe["train"])
    if args.dry_run:
        print(yaml.safe_dump({k: recipe[k] for k in ("synthetic", "train")},
                             sort_keys=False, allow_unicode=True))
        return 0
    prepare_data(recipe)
    from ..train.trainer import train
    result = train(recipe["train"], callbacks=_heartbeat_callbacks())
    summary = f"[fr-train] done: {result.iterations} iterations in {result.seconds:.0f} s"
    if result.best_metric is not None:
        summary += (f"; best verification accuracy {result.best_metric:.4f} at "
                    f"iteration {result.best_iteration}")
    print(summary + f"; log {result.log_path}; last checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
