"""Finding, reading and overriding recipes: the shipped ones by name
(:func:`list_recipes`, :func:`recipe_path`), the quick section and ``--set``
overrides (:func:`apply_override`), all in :func:`load_recipe`.
"""
import copy
import os

import yaml

from ..utils.quick import quick_mode
from .schema import _yaml_load, validate_recipe

__all__ = ["RECIPE_DIR", "list_recipes", "recipe_path", "load_recipe",
           "apply_override"]

RECIPE_DIR = os.path.dirname(os.path.abspath(__file__))
_TOP_KEYS = {"name", "description", "published", "synthetic", "train", "quick"}

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
