"""``fr-eval`` and ``fr-export``: evaluate or export the backbone of a training run.

A training run (``fr-train`` or :func:`fr_lib.train.train`) leaves
``<out_dir>/log.jsonl`` (its first record holds the configuration) and
``<out_dir>/checkpoints/`` (``best-*`` when verification ran, ``ckpt-*``
otherwise). Both commands rebuild the backbone from that configuration and
load the best parameters (``--which last`` takes the newest checkpoint)::

    fr-eval runs/qs --bins ~/.mxnet/datasets/face/emore/lfw.bin
    fr-export runs/qs --out exported/qs --onnx exported/qs.onnx
"""
import argparse
import glob
import json
import os
import sys

__all__ = ["load_run", "eval_main", "export_main"]


def load_run(run_dir, which="best", ctx=None):
    """The backbone of a training run, with its trained parameters.

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
        No ``log.jsonl`` with a start record, or no checkpoint; the message
        names the path.
    """
    import mxnet as mx
    from .model_zoo import get_model
    log = os.path.join(run_dir, "log.jsonl")
    config = None
    if os.path.isfile(log):
        with open(log, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == "start" and "config" in rec:
                    config = rec["config"]
                    break
    if config is None:
        raise FileNotFoundError(f"{log}: no training log with a start record (is "
                                f"{run_dir} the out_dir of a training run?)")
    ckpts = os.path.join(run_dir, "checkpoints")
    candidates = []
    if which == "best":
        candidates = sorted(glob.glob(os.path.join(ckpts, "best-*", "backbone.params")))
    if not candidates:
        candidates = sorted(glob.glob(os.path.join(ckpts, "ckpt-*", "backbone.params")))
    if not candidates:
        raise FileNotFoundError(f"{ckpts}: no checkpoint with backbone.params")
    params = candidates[-1]
    net = get_model(config["backbone"], **config.get("backbone_kwargs", {}))
    net.load_parameters(params, ctx=ctx or mx.cpu())
    net.hybridize(static_alloc=True)
    return net, config, params


def _common(parser):
    parser.add_argument("run", help="the out_dir of a training run")
    parser.add_argument("--which", choices=["best", "last"], default="best",
                        help="best verified parameters (default) or the last checkpoint")


def eval_main(argv=None):
    """Entry point of ``fr-eval``: the chapter-5 protocol on ``.bin`` sets."""
    parser = argparse.ArgumentParser(
        prog="fr-eval", description="Verification accuracy (10-fold protocol with "
        "flip), AUC, EER and TAR@FAR of a trained backbone on .bin pair sets.")
    _common(parser)
    parser.add_argument("--bins", nargs="+", required=True, help=".bin files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-flip", action="store_true")
    args = parser.parse_args(argv)
    from .data.binfile import read_bin
    from .metrics.evaluator import VerificationEvaluator, results_table
    try:
        net, _, params = load_run(args.run, args.which)
        sets = {}
        for path in args.bins:
            name = os.path.splitext(os.path.basename(path))[0]
            sets[name] = read_bin(path)
    except (FileNotFoundError, ValueError) as e:
        print(f"fr-eval: {e}", file=sys.stderr)
        return 2
    print(f"[fr-eval] {params}")
    evaluator = VerificationEvaluator(sets, batch_size=args.batch_size,
                                      flip=not args.no_flip)
    print(results_table(evaluator.evaluate(net)))
    return 0


def export_main(argv=None):
    """Entry point of ``fr-export``: symbol + params, and optionally ONNX."""
    parser = argparse.ArgumentParser(
        prog="fr-export", description="Export the backbone of a training run as "
        "MXNet symbol/params files and optionally ONNX (no classifier head).")
    _common(parser)
    parser.add_argument("--out", required=True, help="output prefix, e.g. exported/model")
    parser.add_argument("--onnx", help="also write this .onnx file")
    args = parser.parse_args(argv)
    from .deploy import export_model, export_onnx
    try:
        net, _, params = load_run(args.run, args.which)
    except (FileNotFoundError, ValueError) as e:
        print(f"fr-export: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    prefix = export_model(net, args.out)
    print(f"[fr-export] {params} -> {prefix}-symbol.json, {prefix}-0000.params")
    if args.onnx:
        export_onnx(prefix, args.onnx)
        print(f"[fr-export] -> {args.onnx}")
    return 0
