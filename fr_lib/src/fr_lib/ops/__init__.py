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
channels-last training operators with backward passes, and ``fr_pw_bn_act``
and ``fr_dw_bn_act`` each a convolution with its BatchNorm + PReLU in one
operator (fewer passes over the activations), used by
:class:`fr_lib.model_zoo.NativeTrainingView` (the trainer's default engine
for MobileFaceNet on CPU).

How: the C++ sources ``csrc/*.cc`` ship with the package. ``scripts/setup.sh``
and ``fr_install`` build them once after installing, as does
``python -m fr_lib.native build`` (or ``python -m fr_lib.ops``), with a
progress line and the time it took. Otherwise the first call that needs them
compiles them with the system C++ compiler (``$CXX``, ``c++``, ``g++`` or
``clang++``; 30 s on an idle 2-core machine, more on a loaded one) and says so
on stderr before it starts. They are compiled against the headers that come
with the ``mxnet`` wheel (``mxnet/include/mxnet/lib_api.h``) and loaded with
:func:`mxnet.library.load`. The library is cached under
``~/.cache/fr_lib/native/<key>/`` (``FR_LIB_NATIVE_DIR`` moves it); the key
hashes the sources, the MXNet version, the compiler (path and modification
time) and its command, so an upgrade rebuilds. It is written to a temporary
name and renamed, so concurrent builds (several notebooks, distributed
workers) cannot load a half-written file.

A failed build is cached too (``libfr_ops.so.failed`` next to where the
library would be, holding the compiler's last lines): it is reported in full
once, and later processes fall back to MXNet at once, without compiling again,
until the sources or the compiler change or ``python -m fr_lib.native build
--force`` retries.

The hot loops are compiled three times (GCC ``target_clones``: AVX-512,
AVX2+FMA, baseline x86-64) and one is picked when the library loads.
``FR_LIB_ISA=avx512|avx2|generic`` builds (and caches separately) a library
with only that variant, so the tests execute every one of them;
``FR_LIB_CXXFLAGS`` adds compiler flags (e.g. ``-Wall``).

Nothing uses them implicitly: fr_lib's blocks run their MXNet formulas
unless converted with :func:`fr_lib.native.to_native` (the trainer, the
evaluator and ``prepare_for_inference`` do so on CPU with ``engine='auto'``).
Everything degrades gracefully: without a compiler or with
``FR_LIB_NATIVE=0``, ``engine='auto'`` means the MXNet formulas (same
results, slower on CPU). Graphs
meant for other programs (:func:`fr_lib.deploy.export_model`, ONNX) are
always traced without native operators, and once the operators are loaded a
plain ``HybridBlock.export`` writes ``fr_prelu`` as MXNet's own
``LeakyReLU(act_type='prelu')`` (the same function) and refuses to write any
other native operator (:class:`NativeExportError` says what to do instead).

Usage::

    python -m fr_lib.native build [--force]   # build (if needed) and report
    python -m fr_lib.ops [--force]            # the same
"""
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import mxnet as mx

__all__ = ["NativeBuildError", "NativeExportError", "build", "load",
           "available", "load_error", "use_native", "native_ops", "source_path",
           "library_path", "plain_symbol"]

_CSRC = os.path.join(os.path.dirname(__file__), "csrc")
_SOURCE = os.path.join(_CSRC, "fr_ops.cc")
# fr_fused.cc: the whole-network inference operator (fr_lib.model_zoo.fused)
# fr_train.cc: NHWC training operators (fr_lib.model_zoo.native_train)
_SOURCES = (_SOURCE, os.path.join(_CSRC, "fr_fused.cc"),
            os.path.join(_CSRC, "fr_train.cc"))
_HEADERS = (os.path.join(_CSRC, "fr_gemm.h"), os.path.join(_CSRC, "fr_clones.h"))
_LIB_NAME = "libfr_ops.so"
_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-fopenmp"]
# FR_LIB_ISA: build one clone of the hot loops only (csrc/fr_clones.h), with
# the /proc/cpuinfo flags the CPU needs for it
_ISAS = {"avx512": (3, ("avx512f",)), "avx2": (2, ("avx2", "fma")),
         "generic": (1, ())}

_lock = threading.Lock()
_state = {"loaded": None, "error": None}  # read through load() / load_error()


class NativeBuildError(RuntimeError):
    """The native operators could not be compiled or loaded.

    ``cached`` is True when the failure was read from the failure marker of
    an earlier build (nothing was compiled this time).
    """

    def __init__(self, message, cached=False):
        super().__init__(message)
        self.cached = cached


class NativeExportError(RuntimeError):
    """A graph to export contains native operators plain MXNet cannot load."""


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


def _isa():
    """The forced clone from ``FR_LIB_ISA`` (None: all clones, picked at load)."""
    name = os.environ.get("FR_LIB_ISA", "").strip().lower()
    if name in ("", "auto"):
        return None
    if name not in _ISAS:
        raise NativeBuildError(f"FR_LIB_ISA={name!r}: expected one of "
                               f"auto, {', '.join(_ISAS)}")
    return name


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _flags():
    flags = list(_FLAGS)
    isa = _isa()
    if isa is not None:
        flags.append(f"-DFR_LIB_ISA_FORCED={_ISAS[isa][0]}")
    flags += shlex.split(os.environ.get("FR_LIB_CXXFLAGS", ""))
    return flags


def _compile_commands(compiler, out, objdir):
    """One compile command per source (run in parallel) and the link command."""
    inc = os.path.join(_mxnet_dir(), "include")
    lib_api = os.path.join(_mxnet_dir(), "src", "lib_api.cc")
    flags = _flags()
    compiles, objects = [], []
    for k, source in enumerate(_SOURCES + (lib_api,)):
        obj = os.path.join(objdir, f"{k}_{os.path.basename(source)}.o")
        compiles.append([compiler, *flags, "-I", inc, "-c", source, "-o", obj])
        objects.append(obj)
    link = [compiler, *flags, "-shared", *objects, "-o", out]
    return compiles, link


def _command(compiler, out):
    """The build as one command line (what the cache key hashes)."""
    inc = os.path.join(_mxnet_dir(), "include")
    lib_api = os.path.join(_mxnet_dir(), "src", "lib_api.cc")
    return [compiler, *_flags(), "-shared", "-I", inc, *_SOURCES, lib_api,
            "-o", out]


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
    real = os.path.realpath(compiler)
    if os.path.exists(real):  # an upgraded compiler rebuilds
        key.update(f"{real} {os.stat(real).st_mtime_ns}".encode())
    key.update(sys.platform.encode())
    return os.path.join(_cache_root(), key.hexdigest()[:16], _LIB_NAME)


def failure_path(compiler=None):
    """The marker a failed build leaves next to :func:`library_path`."""
    return library_path(compiler) + ".failed"


def _timing_path():
    return os.path.join(_cache_root(), "last_build_seconds")


def _expected_seconds():
    try:
        with open(_timing_path()) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def _write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _say(message):
    print(message, file=sys.stderr, flush=True)


def _run_build(compiler, path, verbose):
    """Compile the sources in parallel into a temporary file, rename it to
    ``path``; returns None or the failure's text."""
    workdir = tempfile.mkdtemp(prefix="build-", dir=os.path.dirname(path))
    tmp = os.path.join(workdir, _LIB_NAME)
    try:
        compiles, link = _compile_commands(compiler, tmp, workdir)
        if verbose:
            for cmd in compiles + [link]:
                _say(" ".join(cmd))
        procs = [(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
                 for cmd in compiles]
        failed = []
        for cmd, proc in procs:
            out = proc.communicate()[0]
            if proc.returncode != 0:
                failed.append((cmd, proc.returncode, out))
        if not failed:
            proc = subprocess.run(link, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                failed.append((link, proc.returncode, proc.stdout))
        if failed:
            cmd, code, out = failed[0]
            tail = "\n".join(out.strip().splitlines()[-25:])
            return f"{' '.join(cmd)}\nexited with {code}:\n{tail}"
        os.replace(tmp, path)
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build(force=False, verbose=False, progress=True):
    """Compile the native operators unless a cached build (or a cached
    failure) exists.

    Parameters
    ----------
    force : bool, default False
        Rebuild even if the cached library or a cached failure exists.
    verbose : bool, default False
        Print the compiler commands.
    progress : bool, default True
        Print a line to stderr before compiling and one with the time it took.

    Returns
    -------
    str
        Path of the shared library.

    Raises
    ------
    NativeBuildError
        No C++ compiler, MXNet's extension headers missing, ``FR_LIB_ISA``
        names a clone this CPU cannot run, or the compiler failed (its last
        lines are in the message). A failure is written to
        :func:`failure_path`; later calls raise it again at once
        (``cached=True``) until the sources or compiler change or
        ``force=True``.
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
    isa = _isa()
    if isa is not None:
        cpu = _cpu_flags()
        missing = [f for f in _ISAS[isa][1] if cpu is not None and f not in cpu]
        if missing:
            raise NativeBuildError(f"FR_LIB_ISA={isa}: this CPU lacks "
                                   f"{', '.join(missing)}")
    path = library_path(compiler)
    failed = path + ".failed"
    if not force:
        if os.path.exists(path):
            return path
        if os.path.exists(failed):
            with open(failed) as f:
                reason = f.read()
            raise NativeBuildError(
                f"an earlier build failed (cached in {failed}; retry with "
                f"`python -m fr_lib.native build --force`):\n{reason}",
                cached=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    names = ", ".join(os.path.basename(p) for p in _SOURCES)
    if progress:
        _say(f"fr_lib: compiling native CPU operators ({names}; "
             f"{os.path.basename(compiler)}, clones: {isa or 'all'}) "
             f"into {os.path.dirname(path)} ...")
    start = time.perf_counter()
    error = _run_build(compiler, path, verbose)
    seconds = time.perf_counter() - start
    if error is not None:
        reason = f"compiling {names} failed:\n{error}"
        # a compiler killed by a signal (out of memory, interrupted) is not
        # a property of these sources: not cached
        killed = "\nexited with -" in error
        if not killed:
            _write_atomic(failed, reason)
        if progress:
            where = ("not cached: the compiler was killed" if killed
                     else f"reason cached in {failed}")
            _say(f"fr_lib: native operator build FAILED after {seconds:.1f} s "
                 f"({where})")
        raise NativeBuildError(reason)
    if os.path.exists(failed):
        os.remove(failed)
    with contextlib.suppress(OSError):
        _write_atomic(_timing_path(), f"{seconds:.1f}\n")
    if progress:
        _say(f"fr_lib: native operators built in {seconds:.1f} s: {path}")
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


def plain_symbol(sym):
    """``sym`` as plain MXNet: each ``fr_prelu`` node becomes MXNet's
    ``LeakyReLU(act_type='prelu')`` (the same function: ``x`` where
    ``x > 0``, else ``alpha * x``, slopes on axis 1), same inputs and names.

    Returns ``sym`` itself when it has no native node.

    Raises
    ------
    NativeExportError
        For any other native operator (``fr_fused_net``, the training
        operators, the losses'): these have no one-node MXNet equivalent.
    """
    graph = json.loads(sym.tojson())
    native = [n for n in graph["nodes"] if n["op"].startswith("fr_")]
    if not native:
        return sym
    others = sorted({n["op"] for n in native if n["op"] != "fr_prelu"})
    if others:
        raise NativeExportError(
            f"the graph contains fr_lib's native operators {', '.join(others)}, "
            "which plain MXNet (and ONNX) cannot load. Export the plain model "
            "instead: fr_lib.deploy.export_model(net, prefix), or trace it "
            "without them: `with fr_lib.native.mxnet_engine(net): "
            "net.hybridize(); net(x); net.export(prefix)` (a fused or native "
            "training view exports through the network it was made from)")
    names = {n["name"] for n in graph["nodes"]}
    for node in native:
        node["op"] = "LeakyReLU"
        node["attrs"] = {"act_type": "prelu"}
        name = node["name"].replace("fr_prelu", "leakyrelu")
        while name in names:
            name += "_"
        names.add(name)
        node["name"] = name
    return mx.sym.load_json(json.dumps(graph))


def _install_export_guard():
    """Make ``HybridBlock.export`` write plain MXNet (see :func:`plain_symbol`)
    once native operators can appear in traced graphs."""
    cls = mx.gluon.HybridBlock
    if getattr(cls.export, "_fr_lib_guard", False):
        return
    original = cls.export

    def export(self, path, epoch=0, remove_amp_cast=True):
        cached = getattr(self, "_cached_graph", None)
        if cached:
            inputs, sym = cached
            plain = plain_symbol(sym)
            if plain is not sym:
                self._cached_graph = (inputs, plain)
                try:
                    return original(self, path, epoch, remove_amp_cast)
                finally:
                    self._cached_graph = (inputs, sym)
        return original(self, path, epoch, remove_amp_cast)

    export.__doc__ = original.__doc__
    export.__wrapped__ = original
    export._fr_lib_guard = True
    cls.export = export
