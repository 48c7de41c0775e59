"""Install the MXNet build that fits this machine (CPU, or a supported GPU).

Run as ``python -m fr_install`` (or ``fr-install``). It does not import fr_lib or
MXNet, so it works before either is usable -- for example in a fresh Colab
runtime, which has NumPy 2 preinstalled.

MXNet 1.9.1's GPU wheels (``mxnet-cu117``, ``mxnet-cu112``) contain kernels for
compute capabilities 5.0-8.6 (Maxwell to Ampere/Ada: P100, V100, T4, A100, A10,
L4, RTX 30/40) and no PTX, so they cannot run on Hopper (H100/H200, 9.0) or
newer. There the CPU wheel is installed instead.
"""
import argparse
import shutil
import subprocess
import sys

__all__ = ["gpu_compute_capabilities", "plan", "main"]

MXNET = "1.9.1"
# CUDA 11 runtime, cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE, NVRTC, cuDNN 8 and
# NCCL 2: what the mxnet-cu117 wheel links against but does not ship.
CUDA11_LIBS = ["nvidia-cuda-runtime-cu11", "nvidia-cublas-cu11",
               "nvidia-cufft-cu11", "nvidia-curand-cu11", "nvidia-cusolver-cu11",
               "nvidia-cusparse-cu11", "nvidia-cuda-nvrtc-cu11",
               "nvidia-cudnn-cu11==8.9.*", "nvidia-nccl-cu11"]
MIN_CC, MAX_CC = (5, 0), (8, 9)


def numpy_pin(version=None):
    # Same pin as fr_lib._compat.numpy_pin (a test keeps them equal); this
    # module cannot import fr_lib, which needs MXNet to import.
    major, minor = (version or sys.version_info)[:2]
    return "numpy==1.23.5" if (major, minor) <= (3, 11) else "numpy==1.26.4"


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


def plan(caps, python_version=None, colab=False):
    """The pip (and apt) commands for these GPU compute capabilities.

    Returns
    -------
    commands : list of list of str
    notes : list of str
        Human-readable reasons (e.g. why a GPU is not used).
    """
    notes = []
    usable = [c for c in caps if MIN_CC <= c <= MAX_CC]
    for cap in caps:
        if cap not in usable:
            notes.append(f"GPU with compute capability {cap[0]}.{cap[1]} cannot run "
                         f"MXNet {MXNET} (its GPU wheels cover 5.0-8.6, no PTX); "
                         "using the CPU build")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    # GluonCV and OpenCV pinned with NumPy so pip cannot pull NumPy 2 back in
    # (opencv-python >= 4.12 requires NumPy 2).
    base = [numpy_pin(python_version), "setuptools", "gluoncv==0.10.5.post0",
            "opencv-python==4.11.0.86"]
    commands = []
    if (python_version or sys.version_info)[:2] >= (3, 12):
        # d2l 1.0.3 pins exact old releases that have no wheels for 3.12+.
        commands.append(pip + ["--no-deps", "d2l==1.0.3"])
    if usable:
        # mxnet and mxnet-cu117 install the same module: remove the CPU build.
        commands.append([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "mxnet"])
        commands.append(pip + base + [f"mxnet-cu117=={MXNET}"] + CUDA11_LIBS)
        notes.append(f"installing mxnet-cu117 for {len(usable)} supported GPU(s)")
    else:
        commands.append(pip + base + [f"mxnet=={MXNET}"])
        if not caps:
            notes.append("no NVIDIA GPU found: installing the CPU build")
    if colab:
        commands.append(["apt-get", "update", "-qq"])
        commands.append(["apt-get", "install", "-y", "-qq", "fonts-wqy-microhei",
                         "fonts-noto-cjk"])
    return commands, notes


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fr_install", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    parser.add_argument("--gpu-cc", action="append", default=None, metavar="X.Y",
                        help="pretend the GPUs have these compute capabilities")
    parser.add_argument("--colab", action="store_true",
                        help="also install a Chinese font with apt-get")
    args = parser.parse_args(argv)
    if args.gpu_cc is None:
        caps = gpu_compute_capabilities()
    else:
        caps = [tuple(int(v) for v in cc.split(".")) for cc in args.gpu_cc]
    commands, notes = plan(caps, colab=args.colab)
    for note in notes:
        print(f"fr_install: {note}")
    for command in commands:
        print("$ " + " ".join(command))
        if not args.dry_run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
