"""Building the native operators: the C++ sources, the compiler and its flags
(``FR_LIB_ISA``, ``FR_LIB_CXXFLAGS``), the cache key and folder, the cached
failure marker, and the parallel compile itself (:func:`build`).
"""
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import mxnet as mx

__all__ = ["NativeBuildError", "build", "source_path", "library_path", "failure_path"]

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


class NativeBuildError(RuntimeError):
    """The native operators could not be compiled or loaded.

    ``cached`` is True when the failure was read from the failure marker of
    an earlier build (nothing was compiled this time).
    """

    def __init__(self, message, cached=False):
        super().__init__(message)
        self.cached = cached


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
