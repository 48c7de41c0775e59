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
# Four parts: schema.py (typing, validate_recipe), loading.py (files, the quick
# section, overrides), check.py (what the run would refuse), cli.py (fr-train).
from .check import check_recipe
from .cli import prepare_data, train_main
from .loading import RECIPE_DIR, apply_override, list_recipes, load_recipe, recipe_path
from .schema import validate_recipe

__all__ = ["RECIPE_DIR", "list_recipes", "recipe_path", "load_recipe",
           "apply_override", "validate_recipe", "check_recipe", "prepare_data",
           "train_main"]
