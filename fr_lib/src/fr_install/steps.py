"""The install steps for this machine (:func:`plan`): each a pip command (or a
Python callable) with a name the failure message can give.
"""
import os
import sys

from .environment import (_fonts_present, _has_module, _installed, _installed_mxnet,
                          _keep_pins, cuda11_dir)
from .packages import (BOOK_PACKAGES, CUDA11_LIBS, D2L, DALI, FONTS, JUPYTER_PACKAGES,
                       MXNET, MXNET_DEPS, wanted_mxnet)

__all__ = ["Step", "plan"]


class Step:
    """One named install step: a command, or a Python callable."""

    def __init__(self, name, command=None, func=None, soft=False):
        self.name, self.command, self.func, self.soft = name, command, func, soft

    def text(self):
        if self.command is not None:
            return " ".join(_quote(c) for c in self.command)
        return f"python -c '{self.func.__doc__ or self.name}'"

    def __repr__(self):
        return f"Step({self.name!r}, {self.text()!r})"


def _quote(arg):
    return f'"{arg}"' if any(c in arg for c in "<>*; ") else arg

def plan(caps, python_version=None, mode="lib", state=None):
    """The install steps for this machine.

    Parameters
    ----------
    caps : list of (int, int)
        GPU compute capabilities (``[]``: no GPU).
    python_version : (int, int), optional
        Defaults to the running interpreter's.
    mode : {'lib', 'book', 'colab'}
    state : dict, optional
        What is installed, for tests: ``numpy``, ``mxnet`` (distribution name
        or None), ``keep`` (list of ``name==version``), ``modules`` (set of
        importable top-level modules), ``cuda11_dir``. Read from this
        environment when omitted.

    Returns
    -------
    steps : list of Step
    notes : list of str
    """
    if mode not in ("lib", "book", "colab"):
        raise ValueError(f"mode must be 'lib', 'book' or 'colab', not {mode!r}")
    pyver = tuple((python_version or sys.version_info)[:2])
    if state is None:
        state = {"numpy": _installed("numpy"), "mxnet": _installed_mxnet()[0],
                 "keep": _keep_pins(), "modules": None,
                 "cuda11_dir": cuda11_dir()}
    modules = state.get("modules")

    def has(module):
        return _has_module(module) if modules is None else module in modules

    py = sys.executable
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    keep = list(state.get("keep", []))
    steps = []
    dist, notes = wanted_mxnet(caps)

    # 1. NumPy: only if there is none (then the newest for this Python).
    if state.get("numpy") is None:
        steps.append(Step("numpy", pip + ["numpy>=1.21"]))
    # 2. MXNet, without its stale numpy<2 pin.
    if state.get("mxnet") != dist:
        if state.get("mxnet") is not None:
            # mxnet and mxnet-cu117 install the same module: remove the other.
            steps.append(Step(f"remove {state['mxnet']}",
                              [py, "-m", "pip", "uninstall", "-y", "-q",
                               state["mxnet"]]))
        steps.append(Step(dist, pip + ["--no-deps", f"{dist}=={MXNET}"]))
    deps = keep + MXNET_DEPS + ["numpy>=1.21", "pyyaml", "tqdm"]
    if pyver >= (3, 12):
        deps.append("setuptools")  # provides distutils, which mxnet imports
    steps.append(Step("mxnet dependencies", pip + deps))
    # 3. GPU: the CUDA 11 libraries, into fr_lib's own folder.
    if dist.startswith("mxnet-cu"):
        steps.append(Step("CUDA 11 libraries",
                          pip + ["--upgrade", "--no-deps", "--target",
                                 state["cuda11_dir"]] + CUDA11_LIBS))
    elif os.path.isdir(state.get("cuda11_dir") or ""):
        steps.append(Step("remove unused CUDA 11 libraries",
                          [py, "-c", "import shutil, sys; shutil.rmtree(sys.argv[1])",
                           state["cuda11_dir"]]))
    # 4. What the notebooks import.
    if mode in ("book", "colab"):
        book = keep + ["numpy>=1.21"] + [req for module, req in BOOK_PACKAGES.items()
                                          if module != "gluoncv"]
        if pyver <= (3, 12):
            book.append(DALI)
        else:
            notes.append(f"NVIDIA DALI has no wheel for Python {pyver[0]}."
                         f"{pyver[1]}: the DALI section skips its pipelines")
        if not has("matplotlib"):
            book.append("matplotlib")
        if not has("cv2"):
            # OpenCV 5 moved the Haar cascades fr_lib's face detector uses
            book.append("opencv-python>=4.5,<5")
        if mode == "book":
            book += list(JUPYTER_PACKAGES.values())
        steps.append(Step("book packages", pip + book))
        # gluoncv and d2l without their dependencies: gluoncv would add
        # opencv-python beside a headless OpenCV; d2l pins numpy==1.23.5 and
        # other exact releases (no wheels on Python >= 3.12). Their real
        # dependencies are in the step above.
        steps.append(Step("gluoncv and d2l",
                          pip + ["--no-deps", BOOK_PACKAGES["gluoncv"], D2L]))
    if mode == "colab" and not _fonts_present():
        steps.append(Step("Chinese fonts (apt-get)",
                          ["sh", "-c", "apt-get update -qq && apt-get install -y "
                           "-qq " + " ".join(FONTS) + " >/dev/null"], soft=True))
    return steps, notes
