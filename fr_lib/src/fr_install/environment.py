"""What this machine has: its GPUs' compute capabilities, the installed
distributions and importable modules, and what it lacks for a mode
(:func:`missing`, ``fr_install --check``). Nothing here imports MXNet.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

from .packages import (BOOK_PACKAGES, CUDA11_SONAMES, D2L, DALI, JUPYTER_PACKAGES, MXNET,
                       wanted_mxnet)

__all__ = ["gpu_compute_capabilities", "missing"]


def gpu_compute_capabilities():
    """Compute capabilities of the visible NVIDIA GPUs, via ``nvidia-smi``."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    caps = []
    for line in out.split():
        try:
            major, minor = line.strip().split(".")
            caps.append((int(major), int(minor)))
        except ValueError:
            continue
    return caps


def _installed(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _installed_mxnet():
    for dist in ("mxnet", "mxnet-cu117", "mxnet-cu112", "mxnet-cu110",
                 "mxnet-cu102", "mxnet-mkl"):
        version = _installed(dist)
        if version is not None:
            return dist, version
    return None, None


def _has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda11_dir():
    import fr_numpy_compat
    return fr_numpy_compat.cuda11_dir()


def _keep_pins():
    """``name==version`` for the installed packages pip must not change."""
    pins = []
    for dist in ("numpy", "matplotlib", "opencv-python", "opencv-python-headless",
                 "opencv-contrib-python", "opencv-contrib-python-headless"):
        version = _installed(dist)
        if version is not None:
            pins.append(f"{dist}=={version}")
    return pins


def _fonts_present():
    if shutil.which("fc-list") is None:
        return False
    out = subprocess.run(["fc-list"], capture_output=True, text=True).stdout
    return "WenQuanYi Micro Hei" in out and "Noto Sans CJK" in out


def missing(mode="lib", caps=None, python_version=None, probe=True):
    """What this environment lacks for ``mode``: a list of short strings.

    Checked without importing MXNet here; with ``probe`` a subprocess does
    ``import mxnet`` (which catches missing CUDA libraries).
    """
    pyver = tuple((python_version or sys.version_info)[:2])
    caps = gpu_compute_capabilities() if caps is None else caps
    gaps = []
    dist, _ = wanted_mxnet(caps)
    have, _ = _installed_mxnet()
    if have is None:
        gaps.append(f"{dist}=={MXNET}")
    elif have != dist:
        gaps.append(f"{dist}=={MXNET} (found {have})")
    needed = {"numpy": "numpy", "yaml": "pyyaml", "tqdm": "tqdm",
              "requests": "requests", "graphviz": "graphviz",
              "fr_numpy_compat": "fr_lib"}
    if pyver >= (3, 12):
        needed["setuptools"] = "setuptools"
    if mode in ("book", "colab"):
        needed.update(BOOK_PACKAGES)
        needed.update({"d2l": D2L, "matplotlib": "matplotlib",
                       "cv2": "opencv-python"})
        if pyver <= (3, 12):
            needed["nvidia.dali"] = DALI
    if mode == "book":
        needed.update(JUPYTER_PACKAGES)
    gaps += [pkg for module, pkg in needed.items() if not _has_module(module)]
    if dist.startswith("mxnet-cu"):
        import glob
        found = {os.path.basename(p) for p in glob.glob(
            os.path.join(cuda11_dir(), "nvidia", "*", "lib", "*.so*"))}
        gaps += [f"{so} (CUDA 11 libraries in {cuda11_dir()})"
                 for so in CUDA11_SONAMES if so not in found]
    if _has_module("fr_numpy_compat"):
        import fr_numpy_compat
        if fr_numpy_compat.find_pth() is None:
            gaps.append(f"{fr_numpy_compat.PTH_NAME} in site-packages "
                        "(restores NumPy names for mxnet)")
    if probe and not gaps:
        result = subprocess.run([sys.executable, "-c", "import mxnet"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            gaps.append(f"a working `import mxnet` ({last})")
    return gaps
