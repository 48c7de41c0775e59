"""Loading the native operators into MXNet once per process, or falling back to
the MXNet formulas with one warning that says why (:func:`load`,
:func:`available`, :func:`load_error`).
"""
import os
import threading
import warnings

import mxnet as mx

from .export import _install_export_guard
from .library import (NativeBuildError, _cache_root, _compiler, _expected_seconds, _say,
                      build, failure_path, library_path)

__all__ = ["load", "available", "load_error", "use_native", "native_ops"]

_lock = threading.Lock()
_state = {"loaded": None, "error": None}  # read through load() / load_error()


def load():
    """Build (if needed) and load the native operators once.

    Returns
    -------
    bool
        Whether ``mx.nd.fr_prelu`` / ``mx.sym.fr_prelu`` are available. A
        failure is reported once as a warning (with the reason) and fr_lib
        falls back to its pure-MXNet formulas.
    """
    with _lock:
        if _state["loaded"] is not None:
            return _state["loaded"]
        if os.environ.get("FR_LIB_NATIVE", "1") == "0":
            _state["loaded"], _state["error"] = False, "disabled by FR_LIB_NATIVE=0"
            return False
        cached = False
        try:
            compiler = _compiler()
            if (compiler and not os.path.exists(library_path(compiler))
                    and not os.path.exists(failure_path(compiler))):
                seconds = _expected_seconds()
                about = (f"about {seconds:.0f} s last time" if seconds
                         else "about 30-90 s on 2 cores")
                _say("fr_lib: first use without a prebuilt library: compiling "
                     f"fr_lib's native CPU operators once ({about}; cached in "
                     f"{_cache_root()}; prebuild with "
                     "`python -m fr_lib.native build`, or set FR_LIB_NATIVE=0 "
                     "to skip them)")
            mx.library.load(build(), False)
            _state["loaded"] = hasattr(mx.nd, "fr_prelu")
            if not _state["loaded"]:
                _state["error"] = "the library loaded but registered no fr_prelu"
        except (NativeBuildError, OSError, mx.base.MXNetError) as err:
            _state["loaded"], _state["error"] = False, str(err)
            cached = getattr(err, "cached", False)
        if _state["loaded"]:
            _install_export_guard()
        elif cached:  # reported in full by the process that compiled it
            lines = _state["error"].splitlines()
            warnings.warn("fr_lib native operators unavailable, using slower "
                          f"pure-MXNet formulas: {lines[0]} "
                          f"{lines[-1] if len(lines) > 1 else ''}",
                          RuntimeWarning, stacklevel=2)
        else:
            warnings.warn("fr_lib native operators unavailable, using slower "
                          f"pure-MXNet formulas: {_state['error']}",
                          RuntimeWarning, stacklevel=2)
        return _state["loaded"]


def available():
    """Whether the native operators are loaded (loading them if needed)."""
    return load()


def load_error():
    """Why the native operators are unavailable ('' when they load)."""
    return "" if load() else (_state["error"] or "unknown reason")


def use_native():
    """Deprecated: whether the native operators load (:func:`available`).

    fr_lib's blocks no longer ask this while tracing: they run their MXNet
    formulas unless converted with :func:`fr_lib.native.to_native`.
    """
    warnings.warn("fr_lib.ops.use_native() is deprecated: use fr_lib.ops.available(); "
                  "blocks are converted explicitly with fr_lib.native.to_native(net)",
                  DeprecationWarning, stacklevel=2)
    return available()


def native_ops(enabled):
    """Removed: there is no global switch any more.

    Raises
    ------
    RuntimeError
        Always, naming the explicit replacement.
    """
    raise RuntimeError(
        "fr_lib.ops.native_ops() was removed: fr_lib's blocks run their MXNet "
        "formulas unless converted with fr_lib.native.to_native(net); use "
        "engine='mxnet' (trainer, evaluator, prepare_for_inference), "
        "fr_lib.native.to_mxnet(net) or `with fr_lib.native.mxnet_engine(net):`")
