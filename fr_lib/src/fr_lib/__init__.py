"""fr_lib: face recognition with MXNet Gluon, the package behind the Gluon FR book.

Importing ``fr_lib`` first makes MXNet 1.9.1 importable on the running Python
(see :mod:`fr_lib._compat`), then exposes the subpackages:

- :mod:`fr_lib.loss` -- losses, ``get_loss`` / ``get_loss_list``
- :mod:`fr_lib.model_zoo` -- backbones, ``get_model`` / ``get_model_list``
- :mod:`fr_lib.data` -- data locations, alignment, datasets
- :mod:`fr_lib.metrics` -- similarity and verification metrics
- :mod:`fr_lib.train` -- multi-device training helpers
- :mod:`fr_lib.utils` -- devices, quick mode, plots, timers, widgets
- :mod:`fr_lib.ops` -- native CPU operators (PReLU, margin softmax), compiled
  on first use, with pure-MXNet fallbacks
"""
from ._version import __version__
from ._compat import CompatibilityError, import_mxnet

import os as _os
import sys as _sys
_MXNET_FIRST = "mxnet" in _sys.modules
mx = import_mxnet()
# what MXNet's engine read at load (unknown, hence None, if MXNet came first)
_MXNET_THREADS_AT_LOAD = None if _MXNET_FIRST else _os.environ.get("OMP_NUM_THREADS")


def configure_threads(n=None):
    """Set the number of OpenMP threads MXNet uses; return it.

    Book: introduced in ``chapter_introduction/face-recognition-task`` (人脸识别任务).

    ``OMP_NUM_THREADS`` is set (for MXNet when it loads later, and for
    child processes). When MXNet is already loaded the running library is
    told as well, through ``MXSetNumOMPThreads``; that reaches the calling
    thread, while MXNet's engine worker threads keep the number they read
    at load, so if that number differs a ``RuntimeWarning`` says to call
    this (or ``import fr_lib``) before ``import mxnet``. ``n=None`` keeps an
    ``OMP_NUM_THREADS`` you set and otherwise uses one thread per usable
    core (MXNet's own default is half of them:
    :func:`fr_lib._compat.set_default_threads`). The command-line tools
    call it; a notebook calls it in its first cell.
    """
    import ctypes
    import warnings
    from ._compat import set_default_threads
    if n is None:
        n = set_default_threads()
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"configure_threads: n must be a positive integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"configure_threads: n must be a positive integer, got {n}")
    before = _os.environ.get("OMP_NUM_THREADS")
    _os.environ["OMP_NUM_THREADS"] = str(n)
    mxnet = _sys.modules.get("mxnet")
    if mxnet is not None:
        if before != str(n) and _MXNET_THREADS_AT_LOAD != str(n):
            warnings.warn(
                f"configure_threads({n}): MXNet was loaded with OMP_NUM_THREADS="
                f"{_MXNET_THREADS_AT_LOAD or 'not set by fr_lib'}; its engine threads "
                "keep the number they read then. "
                "Fix: call fr_lib.configure_threads() (or import fr_lib) before "
                "import mxnet.", RuntimeWarning, stacklevel=2)
        mxnet.base.check_call(mxnet.base._LIB.MXSetNumOMPThreads(ctypes.c_int(n)))
    return n


from . import ops, utils, data, loss, model_zoo, metrics, train  # noqa: E402
from .loss import get_loss, get_loss_list  # noqa: E402
from .model_zoo import get_model, get_model_list  # noqa: E402

__all__ = ["__version__", "CompatibilityError", "configure_threads", "ops", "utils", "data", "loss",
           "model_zoo", "metrics", "train", "get_loss", "get_loss_list",
           "get_model", "get_model_list"]
