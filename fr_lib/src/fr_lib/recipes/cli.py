"""The ``fr-train`` command line: load and check a recipe, generate its synthetic
data (:func:`prepare_data`), train.
"""
import os

import yaml

from ..cli import ArgumentParser, add_debug_flag, run_main
from .check import _resolve_data, _resolve_resume, check_recipe
from .loading import list_recipes, load_recipe

__all__ = ["prepare_data", "train_main"]


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
                        help="print the recipe resolved, check it as the run would "
                             "(types, unknown keys, model/loss names and arguments, "
                             "devices, files that must exist) and stop: exit 0, or "
                             "the problems on stderr and exit 2")
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
        problem = None
    except ValueError as e:
        problem = ValueError(f"{recipe['path']}: {e}")
    if problem is not None and not args.dry_run:
        raise problem
    if isinstance(recipe["train"].get("resume"), str):
        recipe["train"]["resume"] = _resolve_resume(recipe["train"])
    if args.dry_run:
        # the settings first, also where this machine could not run them (a
        # recipe for 8 GPUs checked on a laptop); then its problems, exit 2
        print(yaml.safe_dump({k: recipe[k] for k in ("synthetic", "train")},
                             sort_keys=False, allow_unicode=True), flush=True)
        if problem is not None:
            raise problem
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
