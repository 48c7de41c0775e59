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
"""
import argparse
import copy
import os
import sys

import yaml

from ..utils.quick import quick_mode

__all__ = ["RECIPE_DIR", "list_recipes", "recipe_path", "load_recipe",
           "apply_override", "prepare_data", "train_main"]

RECIPE_DIR = os.path.dirname(os.path.abspath(__file__))
_TOP_KEYS = {"name", "description", "published", "synthetic", "train", "quick"}


def list_recipes():
    """Names of the recipes shipped with fr_lib (``fr-train NAME`` runs one)."""
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
        Malformed assignment or unknown top-level section.
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
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {assignment!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(value)
    return recipe


def load_recipe(name_or_path, overrides=(), quick=None):
    """Read a recipe, apply quick-mode overrides and ``--set`` overrides.

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
        The file is not a YAML mapping, has unknown sections or unknown
        training options; the message names the file.
    """
    path = recipe_path(name_or_path)
    with open(path, encoding="utf-8") as f:
        try:
            recipe = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
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
        recipe = _merge(recipe, recipe["quick"])
    recipe.pop("quick", None)
    recipe.setdefault("train", {})
    recipe.setdefault("synthetic", None)
    for a in overrides:
        apply_override(recipe, a)
    from ..train.trainer import TrainConfig
    try:
        TrainConfig.from_dict(recipe["train"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    recipe["path"] = path
    return recipe


def prepare_data(recipe, progress=True):
    """Generate the synthetic training set of a recipe if it is not there yet.

    Returns
    -------
    str or None
        The data folder (``train.data``), or None when the recipe names none.
    """
    data = recipe["train"].get("data")
    if data:
        from ..data.root import get_data_root
        data = os.path.expanduser(data.replace("{data_root}", get_data_root()))
        recipe["train"]["data"] = data
    synth = recipe.get("synthetic")
    if synth and data and not os.path.isfile(os.path.join(data, "train.rec")):
        from ..data.synthetic import write_dataset
        print(f"[fr-train] generating synthetic identities into {data}")
        write_dataset(data, progress=progress, **synth)
    return data


def train_main(argv=None):
    """Entry point of ``fr-train`` (see ``fr-train --help``)."""
    parser = argparse.ArgumentParser(
        prog="fr-train",
        description="Train a face model from a YAML recipe. Shipped recipes: "
                    + ", ".join(list_recipes()))
    parser.add_argument("recipe", nargs="?", help="a recipe file or shipped name")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a recipe value (YAML syntax); repeatable")
    parser.add_argument("--out", help="shortcut for --set train.out_dir=OUT")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="apply the recipe's quick section (default: FR_QUICK)")
    mode.add_argument("--full", action="store_true",
                      help="ignore the quick section even if FR_QUICK=1")
    parser.add_argument("--list", action="store_true", help="list shipped recipes")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved recipe and stop")
    args = parser.parse_args(argv)
    if args.list:
        for name in list_recipes():
            r = load_recipe(name, quick=False)
            print(f"{name:32s} {r.get('description', '').strip().splitlines()[0]}")
        return 0
    if not args.recipe:
        parser.error("give a recipe (a file or one of: " + ", ".join(list_recipes()) + ")")
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    quick = True if args.quick else False if args.full else None
    try:
        recipe = load_recipe(args.recipe, overrides, quick=quick)
    except (ValueError, FileNotFoundError) as e:
        print(f"fr-train: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(yaml.safe_dump({k: recipe[k] for k in ("synthetic", "train")},
                             sort_keys=False, allow_unicode=True))
        return 0
    prepare_data(recipe)
    from ..train.trainer import train
    result = train(recipe["train"])
    summary = f"[fr-train] done: {result.iterations} iterations in {result.seconds:.0f} s"
    if result.best_metric is not None:
        summary += (f"; best verification accuracy {result.best_metric:.4f} at "
                    f"iteration {result.best_iteration}")
    print(summary + f"; log {result.log_path}; last checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
