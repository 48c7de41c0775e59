"""Every public docstring in fr_lib renders cleanly in the API appendix.

The book is built with ``-W``, so one malformed docstring (an unclosed
``literal``, free text after a numpy ``Parameters`` section that napoleon
swallows as fake parameters) fails the whole build. This test finds such
problems in seconds, with the same napoleon settings as ``_config.yml``,
instead of at the end of a 10-minute book build.
"""
import importlib
import inspect
import io
import os
import pkgutil
import re

import pytest
import yaml

napoleon = pytest.importorskip("sphinx.ext.napoleon")
docutils_core = pytest.importorskip("docutils.core")

import fr_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sphinx-only markup that plain docutils does not know: roles become plain
# interpreted text, directives an admonition with the same body.
_ROLE = re.compile(r":(?:\w+:)?\w+:`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:math|attribute|method|function|class|"
                        r"code-block|note|warning|seealso|deprecated|"
                        r"versionadded|versionchanged)::.*$", re.M)
_FIELD = re.compile(r"^\s*:(?:param|type) ([^:]*):", re.M)
_NAME = re.compile(r"\w+(, \w+)*")


def _napoleon_config():
    with open(os.path.join(ROOT, "_config.yml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)["sphinx"]["config"]
    custom = [tuple(c) if isinstance(c, list) else c
              for c in cfg.get("napoleon_custom_sections") or []]
    return napoleon.Config(napoleon_use_param=True, napoleon_use_rtype=True,
                           napoleon_custom_sections=custom)


def _documented_objects():
    seen = set()
    for info in pkgutil.walk_packages(fr_lib.__path__, "fr_lib."):
        if info.name.endswith(".__main__"):
            continue
        mod = importlib.import_module(info.name)
        items = [(info.name, mod)]
        for name, obj in vars(mod).items():
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                items.append((f"{info.name}.{name}", obj))
            if inspect.isclass(obj):
                items += [(f"{info.name}.{name}.{m}", f)
                          for m, f in vars(obj).items()
                          if inspect.isfunction(f) and not m.startswith("_")]
        for qual, obj in items:
            if id(obj) not in seen and inspect.getdoc(obj):
                seen.add(id(obj))
                yield qual, obj


def test_docstrings_render_without_warnings():
    config = _napoleon_config()
    problems = []
    count = 0
    for qual, obj in _documented_objects():
        count += 1
        what = "class" if inspect.isclass(obj) else "function"
        rst = str(napoleon.NumpyDocstring(inspect.getdoc(obj), config, what=what))
        for field in _FIELD.findall(rst):
            plain = field.replace("\\", "").replace("*", "").strip()
            if not _NAME.fullmatch(plain):
                problems.append(f"{qual}: napoleon made a parameter of {field!r} "
                                "(free text after a numpy section? use a section "
                                "such as Notes, Inputs or Outputs)")
        text = _DIRECTIVE.sub(r"\1.. note:: x", _ROLE.sub("`", rst))
        err = io.StringIO()
        docutils_core.publish_doctree(
            text, settings_overrides={"warning_stream": err, "report_level": 2,
                                      "halt_level": 5})
        for line in err.getvalue().splitlines():
            # the directive stand-in can mis-indent a multi-line math block
            if "WARNING" in line or "ERROR" in line:
                if "ends without a blank line" in line and ".. math::" in rst:
                    continue
                problems.append(f"{qual}: {line}")
    assert count > 200, f"only {count} docstrings found: is fr_lib importable?"
    assert not problems, "\n".join(problems)
