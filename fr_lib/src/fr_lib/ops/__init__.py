"""Native CPU operators, compiled on first use and loaded into MXNet.

Why: MXNet 1.9 has no fast per-channel PReLU on CPU. Its own
``LeakyReLU(act_type='prelu')`` spends most of a MobileFaceNet training step
in its backward pass, and any composition of broadcast operators makes four
or more passes over every activation. ``fr_prelu`` does one pass forward and
one backward; with it a MobileFaceNet + ArcFace training step on 2 cores is
about 2x faster (``benchmarks/bench_train.py``).

A third operator, ``fr_fused_net`` (``csrc/fr_fused.cc``), runs a whole
MobileFaceNet forward pass for inference: see :mod:`fr_lib.model_zoo.fused`.
``fr_pw_conv``, ``fr_dw_conv`` and ``fr_bn_act`` (``csrc/fr_train.cc``) are
channels-last training operators with backward passes, used by
:class:`fr_lib.model_zoo.NativeTrainingView` (the trainer's default engine
for MobileFaceNet on CPU).

How: the C++ sources ``csrc/*.cc`` ship with the package. The first call
that needs it compiles it with the system C++ compiler (``c++``/``g++``, a few
seconds) against the headers that come with the ``mxnet`` wheel
(``mxnet/include/mxnet/lib_api.h``) and loads it with
:func:`mxnet.library.load`. The library is cached under
``~/.cache/fr_lib/native/<key>/`` (``FR_LIB_NATIVE_DIR`` moves it); the key
hashes the source, the MXNet version and the compiler command, so an
upgrade rebuilds. It is written to a temporary name and renamed, so
concurrent builds (several notebooks, distributed workers) cannot load a
half-written file.

Everything degrades gracefully: without a compiler, with ``FR_LIB_NATIVE=0``,
on a GPU machine, or inside :func:`native_ops(False) <native_ops>`, fr_lib's
blocks use their pure-MXNet formulas (same results, slower on CPU). Graphs
meant for other programs (:func:`fr_lib.deploy.export_model`, ONNX) are
always traced without native operators.

Usage::

    python -m fr_lib.ops          # build (if needed) and report
"""
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import mxnet as mx

__all__ = ["NativeBuildError", "build", "load", "available", "use_native",
           "native_ops", "source_path", "library_path"]

_CSRC = os.path.join(os.path.dirname(__file__), "csrc")
_SOURCE = os.path.join(_CSRC, "fr_ops.cc")
# fr_fused.cc: the whole-network inference operator (fr_lib.model_zoo.fused)
# fr_train.cc: NHWC training operators (fr_lib.model_zoo.native_train)
_SOURCES = (_SOURCE, os.path.join(_CSRC, "fr_fused.cc"),
            os.path.join(_CSRC, "fr_train.cc"))
_HEADERS = (os.path.join(_CSRC, "fr_gemm.h"), os.path.join(_CSRC, "fr_clones.h"))
_LIB_NAME = "libfr_ops.so"
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp"]

_lock = threading.Lock()
_state = {"loaded": None, "error": None, "enabled": True}


class NativeBuildError(RuntimeError):
    """The native operators could not be compiled or loaded."""


def source_path():
    """Path of the main C++ source that :func:`build` compiles (the others
    lie next to it)."""
    return _SOURCE


def _mxnet_dir():
    return os.path.dirname(os.path.abspath(mx.__file__))


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _command(compiler, out):
    inc = os.path.join(_mxnet_dir(), "include")
    lib_api = os.path.join(_mxnet_dir(), "src", "lib_api.cc")
    return [compiler, *_FLAGS, "-I", inc, *_SOURCES, lib_api, "-o", out]


def _cache_root():
    root = os.environ.get("FR_LIB_NATIVE_DIR")
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fr_lib", "native")


def library_path(compiler=None):
    """Where the compiled library for this source and MXNet version lives."""
    compiler = compiler or _compiler() or "c++"
    key = hashlib.sha256()
    for source in _SOURCES + _HEADERS:
        with open(source, "rb") as f:
            key.update(f.read())
    key.update(mx.__version__.encode())
    key.update(" ".join(_command(compiler, "")).encode())
    key.update(sys.platform.encode())
    return os.path.join(_cache_root(), key.hexdigest()[:16], _LIB_NAME)


def build(force=False, verbose=False):
    """Compile the native operators unless a cached build exists.

    Parameters
    ----------
    force : bool, default False
        Rebuild even if the cached library exists.
    verbose : bool, default False
        Print the compiler command.

    Returns
    -------
    str
        Path of the shared library.

    Raises
    ------
    NativeBuildError
        No C++ compiler, MXNet's extension headers missing, or the compiler
        failed (its output is in the message).
    """
    compiler = _compiler()
    if compiler is None:
        raise NativeBuildError(
            "no C++ compiler found (tried $CXX, c++, g++, clang++); install one "
            "(Debian/Ubuntu: apt install g++) or set FR_LIB_NATIVE=0")
    header = os.path.join(_mxnet_dir(), "include", "mxnet", "lib_api.h")
    if not os.path.exists(header):
        raise NativeBuildError(
            f"{header} not found: this MXNet build ships no extension headers "
            "(MXNet >= 1.7 wheels do)")
    path = library_path(compiler)
    if os.path.exists(path) and not force:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    cmd = _command(compiler, tmp)
    if verbose:
        print(" ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NativeBuildError(
                f"compiling {', '.join(_SOURCES)} failed (exit {proc.returncode}):\n"
                f"{' '.join(cmd)}\n{proc.stderr[-4000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
        try:
            mx.library.load(build(), False)
            _state["loaded"] = hasattr(mx.nd, "fr_prelu")
            if not _state["loaded"]:
                _state["error"] = "the library loaded but registered no fr_prelu"
        except (NativeBuildError, OSError, mx.base.MXNetError) as err:
            _state["loaded"], _state["error"] = False, str(err)
        if not _state["loaded"]:
            warnings.warn("fr_lib native operators unavailable, using slower "
                          f"pure-MXNet formulas: {_state['error']}",
                          RuntimeWarning, stacklevel=2)
        return _state["loaded"]


def available():
    """Whether the native operators are loaded (loading them if needed)."""
    return load()


def use_native():
    """Whether fr_lib's blocks should trace their native operators now.

    True when the operators load, :func:`native_ops` has not switched them
    off, and no GPU is visible (the operators are CPU-only, and a graph is
    traced before it is known where it will run).
    """
    if not _state["enabled"]:
        return False
    if mx.context.num_gpus() > 0:
        return False
    return load()


@contextlib.contextmanager
def native_ops(enabled):
    """Switch fr_lib's native operators on or off inside a ``with`` block.

    Graphs are traced when a hybridized block first runs, so clear cached
    graphs (``net.hybridize()``) inside the block for the switch to apply.
    """
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous
