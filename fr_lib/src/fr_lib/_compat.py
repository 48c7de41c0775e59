"""Make MXNet 1.9.1 importable on today's Python, or say exactly why it is not.

MXNet 1.9.1 (2022) is the last MXNet release. It runs on Python 3.10-3.13 and
on NumPy 1.x and 2.x: the wheel has no compiled NumPy code (ctypes only), but
its Python code names aliases NumPy 1.24/2.0 removed (``np.bool``,
``np.PZERO``, ``np.NAN``, ``np.mirr`` ...), and it imports ``distutils``
(gone from the standard library in Python 3.12; setuptools provides it).

The aliases are restored by :mod:`fr_numpy_compat` in every Python process of
the environment (its ``.pth`` file runs at interpreter start); this module
makes sure that file exists, applies the fixes that are safe, and raises
:class:`CompatibilityError` with the exact command for the others.
"""
import importlib
import importlib.util
import os
import sys

__all__ = ["CompatibilityError", "import_mxnet", "check_numpy",
           "set_default_threads", "cuda11_dir", "preload_cuda11"]

MXNET_VERSION = "1.9.1"
# mxnet 1.9.1's metadata says numpy<2 (stale): install it without its
# dependencies, plus the ones it really has.
MXNET_DEPS = ("requests>=2.20,<3", "graphviz>=0.8.1,<0.9")


class CompatibilityError(ImportError):
    """The Python environment cannot run MXNet 1.9.1; the message says how to fix it."""


def _pip(*requirements):
    quoted = " ".join(f'"{r}"' if ("<" in r or ">" in r) else r
                      for r in requirements)
    return f"{sys.executable} -m pip install {quoted}"


def mxnet_install_command(dist="mxnet"):
    """The commands that install MXNet without letting pip touch NumPy."""
    return (f"{_pip('--no-deps', f'{dist}=={MXNET_VERSION}')} && "
            f"{_pip(*MXNET_DEPS)}")


def _version_tuple(text):
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _numpy_hook():
    """Import :mod:`fr_numpy_compat` and (re)write its ``.pth`` if missing."""
    import fr_numpy_compat
    fr_numpy_compat.install()
    if os.environ.get("FR_NUMPY_COMPAT", "1") not in ("0", "false", "no", "off"):
        fr_numpy_compat.write_pth()
    return fr_numpy_compat


def check_numpy(np=None):
    """Restore the NumPy aliases MXNet uses (any NumPy >= 1.21); return NumPy."""
    hook = _numpy_hook()
    if np is None:
        try:
            import numpy as np
        except ImportError as err:
            raise CompatibilityError(
                "fr_lib needs NumPy, which is not installed.\n"
                f"Fix: {_pip('numpy')}") from err
    if _version_tuple(np.__version__) < (1, 21):
        raise CompatibilityError(
            f"fr_lib needs NumPy >= 1.21, found {np.__version__} "
            f"({os.path.dirname(np.__file__)}).\nFix: {_pip('numpy>=1.21')}")
    hook.patch(np)
    return np


def _distutils_available():
    """MXNet imports ``distutils``, gone from the standard library since 3.12;
    setuptools provides it (its ``.pth`` hook, or once it is imported)."""
    if importlib.util.find_spec("distutils") is not None:
        return True
    try:  # setuptools provides distutils once imported
        importlib.import_module("setuptools")
    except ImportError:
        return False
    return importlib.util.find_spec("distutils") is not None


_DISTUTILS_PROBLEM = (
    f"MXNet {MXNET_VERSION} imports 'distutils', which Python "
    f"{sys.version_info.major}.{sys.version_info.minor} no longer ships, and "
    "setuptools (which provides it) is not installed.")


def _installed_mxnet_distribution():
    """``(name, version)`` of the distribution that provides ``import mxnet``
    (``mxnet``, ``mxnet-cu117`` ...), or ``(None, None)``."""
    import glob
    from importlib import metadata
    spec = importlib.util.find_spec("mxnet")
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        for info in sorted(glob.glob(os.path.join(site, "mxnet*.dist-info"))):
            name, _, version = os.path.basename(info)[:-len(".dist-info")].partition("-")
            return name.replace("_", "-").lower(), version
    for name in ("mxnet", "mxnet-cu117", "mxnet-cu112", "mxnet-cu110",
                 "mxnet-cu102", "mxnet-mkl"):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def cuda11_dir():
    """fr_lib's own folder for the CUDA 11 libraries (see fr_numpy_compat)."""
    import fr_numpy_compat
    return fr_numpy_compat.cuda11_dir()


def preload_cuda11(directory=None):
    """Load the CUDA 11 libraries MXNet's GPU wheel needs from fr_lib's folder.

    The ``mxnet-cu117`` wheel links against libcudart, cuBLAS, cuFFT, cuRAND,
    cuSOLVER, cuSPARSE, NVRTC, NVTX, cuDNN 8 and NCCL 2 but does not ship
    them. ``python -m fr_install`` puts the ``nvidia-*-cu11`` wheels into
    :func:`cuda11_dir` (not into site-packages, where they would replace
    torch's CUDA 12 copies); loading them with RTLD_GLOBAL before
    ``libmxnet.so`` lets the dynamic loader find them by name, without
    LD_LIBRARY_PATH (which Colab cannot set before Python starts).
    Returns ``(loaded, failed)`` as :func:`fr_numpy_compat.preload_cuda11`.
    """
    import fr_numpy_compat
    return fr_numpy_compat.preload_cuda11(directory)


def set_default_threads(environ=None):
    """Use one OpenMP thread per usable core unless the user chose a number.

    MXNet 1.9 starts half as many OpenMP threads as there are cores; on a
    2-core machine a LeNet++ training step then ran 1.7x and a GEMM 1.15x
    slower (benchmarks/bench_threads.py). The variable is read when MXNet
    loads, so this runs before ``import mxnet``; an ``OMP_NUM_THREADS``
    already set (by you, a launcher or a notebook) is left alone.

    Returns
    -------
    str
        The value of ``OMP_NUM_THREADS`` now in effect.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("OMP_NUM_THREADS"):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        environ["OMP_NUM_THREADS"] = str(cores)
    return environ["OMP_NUM_THREADS"]


def import_mxnet():
    """Import MXNet after the compatibility fixes; return the module.

    Raises
    ------
    CompatibilityError
        When MXNet or NumPy is missing, ``distutils`` cannot be provided, or
        the GPU build lacks a CUDA library; the message names the problem and
        the command that fixes it.
    """
    dist = None
    if "mxnet" not in sys.modules:
        check_numpy()
        if importlib.util.find_spec("mxnet") is None:
            raise CompatibilityError(
                f"fr_lib needs MXNet {MXNET_VERSION}, which is not installed.\n"
                "Fix: python -m fr_install   (picks the CPU or GPU build; "
                "--dry-run prints the commands)\n"
                f"or, CPU only: {mxnet_install_command()}")
        if not _distutils_available():
            raise CompatibilityError(
                f"{_DISTUTILS_PROBLEM}\nFix: {_pip('setuptools')}")
        dist, _ = _installed_mxnet_distribution()
        if dist is not None and dist.startswith("mxnet-cu"):
            preload_cuda11()
        set_default_threads()
    else:
        check_numpy(sys.modules.get("numpy"))
    try:
        import mxnet
    except (ImportError, OSError) as err:
        if dist is None:
            dist, _ = _installed_mxnet_distribution()
        if dist is not None and dist.startswith("mxnet-cu"):
            fix = (f"python -m fr_install   (installs {dist}'s CUDA 11 "
                   f"libraries into {cuda11_dir()})")
        else:
            fix = mxnet_install_command(dist or "mxnet")
        raise CompatibilityError(
            f"MXNet ({dist or 'mxnet'}) is installed but failed to import: "
            f"{err}\nFix: {fix}") from err
    if not mxnet.__version__.startswith("1.9"):
        import warnings
        warnings.warn(f"fr_lib is tested with MXNet {MXNET_VERSION}, found "
                      f"{mxnet.__version__}", RuntimeWarning, stacklevel=2)
    return mxnet
