"""Make MXNet 1.9.1 importable on today's Python, or say exactly why it is not.

MXNet 1.9.1 (2022) is the last MXNet release. It still runs on Python 3.10-3.13,
but it uses ``np.bool`` (removed in NumPy 1.24), ``distutils`` (removed from the
standard library in Python 3.12) and the NumPy 1.x C ABI (so NumPy 2 cannot
work). :func:`import_mxnet` applies the fixes that are safe and raises
:class:`CompatibilityError` with the exact ``pip`` command for the others.
"""
import importlib
import importlib.util
import os
import sys

__all__ = ["CompatibilityError", "import_mxnet", "numpy_pin", "check_numpy",
           "set_default_threads"]

MXNET_VERSION = "1.9.1"


class CompatibilityError(ImportError):
    """The Python environment cannot run MXNet 1.9.1; the message says how to fix it."""


def numpy_pin(python_version=None):
    """The NumPy release that works with MXNet 1.9.1 on this Python.

    NumPy 1.23.5 has wheels up to Python 3.11; for 3.12 and later the last 1.x
    release (1.26.4) works together with the ``np.bool`` alias.
    """
    major, minor = (python_version or sys.version_info)[:2]
    return "1.23.5" if (major, minor) <= (3, 11) else "1.26.4"


def _pip(*requirements):
    quoted = " ".join(f'"{r}"' if ("<" in r or ">" in r) else r
                      for r in requirements)
    return f"{sys.executable} -m pip install {quoted}"


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


def check_numpy(np=None):
    """Check NumPy and add the ``np.bool`` alias MXNet needs; return the module."""
    if np is None:
        try:
            import numpy as np
        except ImportError as err:
            raise CompatibilityError(
                "fr_lib needs NumPy 1.x, which is not installed.\n"
                f"Fix: {_pip('numpy==' + numpy_pin())}") from err
    version = _version_tuple(np.__version__)
    if version >= (2,):
        raise CompatibilityError(
            f"fr_lib found NumPy {np.__version__} "
            f"({os.path.dirname(np.__file__)}), but MXNet {MXNET_VERSION} is "
            "built against NumPy 1.x and cannot run with NumPy 2.\n"
            f"Fix: {_pip('numpy==' + numpy_pin())}\n"
            "(then restart the Python process or the notebook kernel)")
    if version >= (1, 24) and "bool" not in np.__dict__:
        # Removed in NumPy 1.24; MXNet 1.9.1 still writes np.bool.
        np.bool = np.bool_
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
    from importlib import metadata
    for name in ("mxnet", "mxnet-cu117", "mxnet-cu112", "mxnet-cu110",
                 "mxnet-cu102", "mxnet-mkl"):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _preload_cuda_libraries():
    """Load the CUDA 11 libraries from the ``nvidia-*-cu11`` wheels, if present.

    The GPU wheels of MXNet link against libcudart/libcublas/libcudnn/libnccl but
    do not ship them. The ``nvidia-*-cu11`` wheels put them under
    ``site-packages/nvidia/*/lib``, which the dynamic loader does not search;
    loading them first with RTLD_GLOBAL lets ``import mxnet`` find them without
    setting LD_LIBRARY_PATH before Python starts (which Colab cannot do).
    """
    import ctypes
    import glob
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    loaded = []
    # Order matters: runtime and BLAS before cuDNN, which needs both.
    order = ["cuda_runtime", "cuda_nvrtc", "cublas", "cufft", "curand",
             "cusolver", "cusparse", "nvtx", "cudnn", "nccl"]
    for root in spec.submodule_search_locations:
        for sub in order:
            for path in sorted(glob.glob(os.path.join(root, sub, "lib", "*.so*"))):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    loaded.append(path)
                except OSError:
                    pass  # a library for another CUDA major version
    return loaded


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
        When MXNet is missing, NumPy is 2.x, or ``distutils`` cannot be provided;
        the message names the problem and the ``pip`` command that fixes it.
    """
    if "mxnet" not in sys.modules:
        check_numpy()
        problems, fixes = [], []
        if importlib.util.find_spec("mxnet") is None:
            problems.append(f"fr_lib needs MXNet {MXNET_VERSION}, which is not "
                            "installed.")
            fixes.append("mxnet==" + MXNET_VERSION)
        if not _distutils_available():
            problems.append(_DISTUTILS_PROBLEM)
            fixes.append("setuptools")
        if problems:
            raise CompatibilityError(
                "\n".join(problems) + f"\nFix (CPU): {_pip(*fixes)}\n"
                "For a GPU, `python -m fr_install --dry-run` prints the "
                "matching mxnet-cu117 command and its CUDA 11 libraries.")
        dist, version = _installed_mxnet_distribution()
        if dist is not None and dist.startswith("mxnet-cu"):
            _preload_cuda_libraries()
        set_default_threads()
    else:
        check_numpy(sys.modules.get("numpy"))
    try:
        import mxnet
    except (ImportError, OSError) as err:
        raise CompatibilityError(
            f"MXNet is installed but failed to import: {err}\n"
            f"Fix: {_pip('mxnet==' + MXNET_VERSION, 'numpy==' + numpy_pin())}"
        ) from err
    if not mxnet.__version__.startswith("1.9"):
        import warnings
        warnings.warn(f"fr_lib is tested with MXNet {MXNET_VERSION}, found "
                      f"{mxnet.__version__}", RuntimeWarning, stacklevel=2)
    return mxnet
