"""The schema of a recipe: YAML read with YAML 1.2's numbers, the ``train`` and
``synthetic`` sections typed against the fields of
:class:`~fr_lib.train.trainer.TrainConfig` and the arguments of
:func:`~fr_lib.data.synthetic.write_dataset`, unknown keys refused with the
closest valid names (:func:`validate_recipe`).
"""
import dataclasses
import difflib
import inspect
import re

import yaml

__all__ = ["validate_recipe"]


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
