"""``fr-eval`` and ``fr-export``: evaluate or export the backbone of a training run.

A training run (``fr-train`` or :func:`fr_lib.train.train`) leaves
``<out_dir>/checkpoints/`` (``best-*`` when verification ran, ``ckpt-*``
otherwise); every checkpoint's ``meta.json`` records the run's
configuration and the size and SHA-256 of each file. Both commands pick the
best parameters (``--which last`` takes the newest checkpoint), **verify the
recorded checksums** (a corrupt or truncated file is refused, named), rebuild
the backbone from the checkpoint's configuration (``log.jsonl`` is not
needed) and load it::

    fr-eval runs/qs --bins ~/.mxnet/datasets/face/emore/lfw.bin
    fr-export runs/qs --out exported/qs --onnx exported/qs.onnx

Every fr_lib command-line tool runs through :func:`run_main`: expected
failures (bad arguments, missing or corrupt files, unwritable outputs, bad
configurations) end as one line on stderr and exit code 2; ``--debug`` shows
the traceback instead.
"""
import argparse
import functools
import os
import shutil
import sys
import tempfile

__all__ = ["load_run", "find_checkpoint", "run_main", "add_debug_flag", "one_line",
           "ArgumentParser",
           "eval_main", "export_main"]


# -- one-line errors for every command-line tool ---------------------------------------
def _expected_errors():
    """Exception types that mean "the input or the environment is wrong" (not a bug)."""
    types = [OSError, ValueError, ImportError]
    mods = sys.modules
    for mod, name in (("fr_lib.train.checkpoint", "CheckpointError"),
                      ("fr_lib.train.launch", "LaunchError"),
                      ("fr_lib.train.trainer", "NonFiniteError"),
                      ("mxnet.base", "MXNetError"),
                      ("yaml", "YAMLError")):
        cls = getattr(mods.get(mod), name, None)  # only if already imported
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)


def one_line(err):
    """The message of an exception as one line (MXNet's C++ stack traces dropped)."""
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        # MXNetError: "Traceback ...", "File ...", "[bt] ...", then the message
        keep = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "[bt]",
                                                         "Stack trace", "[0x", "0x"))]
        lines = keep or lines
        text = lines[0] if len(lines) == 1 else "; ".join(lines[:3])
    else:
        text = lines[0]
    return text if len(text) <= 1500 else text[:1497] + "..."


def _wants_debug(argv):
    args = sys.argv[1:] if argv is None else list(argv)
    if "--" in args:
        args = args[:args.index("--")]
    return "--debug" in args or os.environ.get("FR_DEBUG", "") not in ("", "0")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_debug_flag(parser):
    """Add ``--debug`` (show tracebacks) to an ``argparse`` parser."""
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also FR_DEBUG=1)")
    return parser


def run_main(prog):
    """Decorator for the ``main(argv=None)`` of a command-line tool.

    Expected failures (``OSError`` — missing, unreadable or unwritable files —,
    ``ValueError``, ``ImportError``, checkpoint, launch, YAML and MXNet errors)
    print ``<prog>: error: <one line>`` on stderr and return 2; anything else
    is a bug: one line and return 1. ``--debug`` on the command line (or
    ``FR_DEBUG=1``) re-raises instead, with the traceback. Ctrl-C returns 130.
    """
    def wrap(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            debug = _wants_debug(argv)
            from . import configure_threads
            configure_threads()  # explicit, whatever imported MXNet first
            try:
                return main(argv)
            except KeyboardInterrupt:
                if debug:
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except BrokenPipeError:  # `fr-train --list | head`: the reader left
                try:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())  # no error at exit's flush
                except (OSError, ValueError, AttributeError):
                    pass
                return 141  # as a process killed by SIGPIPE
            except Exception as err:  # noqa: BLE001 - the point of this wrapper
                if debug:
                    raise
                if isinstance(err, _expected_errors()):
                    print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
                    return 2
                print(f"{prog}: internal error: {type(err).__name__}: {one_line(err)} "
                      "(rerun with --debug for the traceback)", file=sys.stderr)
                return 1
        return wrapper
    return wrap


# -- loading a run ---------------------------------------------------------------------
def find_checkpoint(run_dir, which="best"):
    """The verified checkpoint of a run that ``fr-eval``/``fr-export`` use.

    Parameters
    ----------
    run_dir : str
        The run's ``out_dir``.
    which : {'best', 'last'}
        ``'best'``: the ``best-*`` checkpoint (the newest ``ckpt-*`` when the
        run never verified); ``'last'``: the newest ``ckpt-*``.

    Returns
    -------
    fr_lib.train.checkpoint.Checkpoint
        Read with every recorded size and SHA-256 checked; nothing in the run
        folder is created or removed.

    Raises
    ------
    FileNotFoundError
        No checkpoint folder or no checkpoint in it.
    fr_lib.train.checkpoint.CheckpointError
        The chosen checkpoint is incomplete or a file in it is corrupt or
        truncated; the message names the file. A corrupt best checkpoint is
        never replaced silently by another one.
    """
    from .train.checkpoint import CheckpointManager
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    ckpts = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpts):
        raise FileNotFoundError(f"{ckpts}: no checkpoint folder (is {run_dir} the "
                                "out_dir of a training run?)")
    managers = [CheckpointManager(ckpts, "ckpt", None, readonly=True)]
    if which == "best":
        managers.insert(0, CheckpointManager(ckpts, "best", None, readonly=True))
    for manager in managers:
        if manager.latest() is not None:
            return manager.load()
    raise FileNotFoundError(f"{ckpts}: no checkpoint (no best-* or ckpt-* folder)")


def _config_from_checkpoints(run_dir):
    """The configuration recorded by the newest ``ckpt-*`` (best-* checkpoints
    hold only the backbone and the metric)."""
    import json
    from .train.checkpoint import CheckpointManager
    manager = CheckpointManager(os.path.join(run_dir, "checkpoints"), "ckpt", None,
                                readonly=True)
    for _, path in reversed(manager.list()):
        try:
            with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
                config = json.load(f).get("state", {}).get("config")
        except (OSError, ValueError, AttributeError):
            continue
        if config:
            return config
    return None


def _config_from_log(run_dir):
    import json
    log = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(log):
        return None
    config = None
    with open(log, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "start" and "config" in rec:
                config = rec["config"]  # the last start record is this run's
    return config


def load_run(run_dir, which="best", ctx=None):
    """The backbone of a training run, with its trained parameters.

    The checkpoint is chosen by :func:`find_checkpoint` and verified against
    the checksums its ``meta.json`` records before anything is loaded. The
    backbone is rebuilt from the configuration stored in that checkpoint's
    ``meta.json``, or (``best-*`` checkpoints store only the backbone) in the
    newest ``ckpt-*`` of the run, so ``log.jsonl`` may be missing; only when
    no checkpoint records one is the last start record of ``log.jsonl`` read.

    Parameters
    ----------
    run_dir : str
        The run's ``out_dir``.
    which : {'best', 'last'}
        The best verified parameters (falls back to the last checkpoint when
        the run never verified) or the newest checkpoint.
    ctx : mxnet.Context, optional

    Returns
    -------
    (net, config, params_path)
        ``net`` is hybridized; ``config`` is the run's configuration dict.

    Raises
    ------
    FileNotFoundError
        No checkpoint, or no configuration; the message names the path.
    fr_lib.train.checkpoint.CheckpointError
        A corrupt, truncated or incomplete checkpoint (the file is named).
    """
    ckpt = find_checkpoint(run_dir, which)
    config = ckpt.state.get("config") or _config_from_checkpoints(run_dir) or \
        _config_from_log(run_dir)
    if not config:
        raise FileNotFoundError(
            f"{os.path.join(ckpt.path, 'meta.json')}: records no configuration, nor "
            f"does any ckpt-* checkpoint, and {os.path.join(run_dir, 'log.jsonl')} has "
            "no start record")
    params = ckpt.file("backbone.params")
    import mxnet as mx
    from .model_zoo import get_model
    net = get_model(config["backbone"], **(config.get("backbone_kwargs") or {}))
    try:
        net.load_parameters(params, ctx=ctx or mx.cpu())
    except Exception as err:  # noqa: BLE001 - MXNet fails in many ways on a bad file
        raise ValueError(f"{params}: not the parameters of the backbone "
                         f"{config['backbone']!r} {config.get('backbone_kwargs') or {}} "
                         f"of the run's configuration ({type(err).__name__}: "
                         f"{one_line(err)})") from err
    net.hybridize(static_alloc=True)
    return net, config, params


def _common(parser):
    parser.add_argument("run", help="the out_dir of a training run")
    parser.add_argument("--which", choices=["best", "last"], default="best",
                        help="best verified parameters (default) or the last checkpoint; "
                             "its recorded checksums are verified before loading")
    add_debug_flag(parser)


@run_main("fr-eval")
def eval_main(argv=None):
    """Entry point of ``fr-eval``: the chapter-5 protocol on ``.bin`` sets."""
    parser = ArgumentParser(
        prog="fr-eval", description="Verification accuracy (10-fold protocol with "
        "flip), AUC, EER and TAR@FAR of a trained backbone on .bin pair sets. "
        "The checkpoint's recorded checksums are verified first; errors are one "
        "line on stderr with exit code 2.")
    _common(parser)
    parser.add_argument("--bins", nargs="+", required=True, help=".bin files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-flip", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    from .data.binfile import read_bin
    from .metrics.evaluator import VerificationEvaluator, results_table
    net, _, params = load_run(args.run, args.which)
    sets = {}
    for path in args.bins:
        name = os.path.splitext(os.path.basename(path))[0]
        sets[name] = read_bin(path)
    print(f"[fr-eval] {params}")
    evaluator = VerificationEvaluator(sets, batch_size=args.batch_size,
                                      flip=not args.no_flip)
    print(results_table(evaluator.evaluate(net)))
    return 0


def _staging_dir(target, created):
    """A fresh hidden folder beside ``target`` (same file system: renames are
    atomic); folders made on the way are appended to ``created``."""
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        raise IsADirectoryError(f"{target}: is a folder, not a file name")
    missing = folder
    while not os.path.exists(missing) and os.path.dirname(missing) != missing:
        top, missing = missing, os.path.dirname(missing)
        if not os.path.exists(missing):
            continue
        created.append(top)
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkdtemp(prefix=".fr-export-", dir=folder)


def _has_files(folder):
    return any(files for _, _, files in os.walk(folder))


@run_main("fr-export")
def export_main(argv=None):
    """Entry point of ``fr-export``: symbol + params, and optionally ONNX."""
    parser = ArgumentParser(
        prog="fr-export", description="Export the backbone of a training run as "
        "MXNet symbol/params files and optionally ONNX (no classifier head). The "
        "checkpoint's recorded checksums are verified first; the files are "
        "written to a temporary folder beside the target and renamed only when "
        "all of them (ONNX included) succeeded, so a failure leaves nothing "
        "behind. Errors are one line on stderr with exit code 2.")
    _common(parser)
    parser.add_argument("--out", required=True, help="output prefix, e.g. exported/model "
                        "(writes PREFIX-symbol.json and PREFIX-0000.params)")
    parser.add_argument("--onnx", help="also write this .onnx file")
    args = parser.parse_args(argv)
    from .deploy import export_model, export_onnx, _paths
    if args.onnx:
        from .deploy import require_onnx
        require_onnx()  # before any work: a missing package is not a half export
    out = os.path.abspath(os.path.expanduser(args.out))
    if args.out.endswith(("/", os.sep)) or os.path.isdir(out):
        raise IsADirectoryError(f"--out {args.out}: is a folder; give a file prefix "
                                f"such as {os.path.join(args.out, 'model')}")
    net, _, params = load_run(args.run, args.which)
    final = dict(zip(("symbol", "params"), _paths(out, 0)))
    if args.onnx:
        final["onnx"] = os.path.abspath(args.onnx)
    staging, created, done = [], [], False
    try:
        for path in final.values():
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path}: is a folder, not a file name")
        stage = _staging_dir(final["params"], created)
        staging.append(stage)
        if args.onnx:  # before the export: an unwritable target fails at once
            onnx_stage = _staging_dir(final["onnx"], created)
            staging.append(onnx_stage)
        prefix = export_model(net, os.path.join(stage, os.path.basename(out)))
        staged = dict(zip(("symbol", "params"), _paths(prefix, 0)))
        if args.onnx:
            staged["onnx"] = export_onnx(prefix, os.path.join(
                onnx_stage, os.path.basename(final["onnx"])))
        for key in ("params", "onnx", "symbol"):  # the symbol file last: it names a model
            if key in staged:
                os.replace(staged[key], final[key])
        done = True
    finally:
        for d in staging:
            shutil.rmtree(d, ignore_errors=True)
        if not done:  # the output folders this call made, if still empty
            for d in reversed(created):
                if not _has_files(d):
                    shutil.rmtree(d, ignore_errors=True)
    print(f"[fr-export] {params} -> {final['symbol']}, {final['params']}")
    if args.onnx:
        print(f"[fr-export] -> {final['onnx']}")
    return 0
