"""Install MXNet 1.9.1 (CPU or GPU build) and what the book needs, on the NumPy you have.

Run as ``python -m fr_install`` (or ``fr-install``). It imports neither fr_lib
nor MXNet, so it works before either is usable -- for example in a fresh Colab
runtime.

    python -m fr_install            # MXNet + what `import fr_lib` needs
    python -m fr_install --book     # ... + every package the notebooks import + Jupyter
    python -m fr_install --colab    # ... as --book, minus Jupyter (Colab has it) + CJK fonts
    python -m fr_install --check [--book|--colab]   # exit 0 iff nothing is missing
    python -m fr_install --dry-run  # print the commands only

Rules it keeps:

- NumPy is never changed: every pip command names the installed NumPy
  (``numpy==<yours>``), so pip can only pick releases that work with it. MXNet
  is installed with ``--no-deps`` (its metadata still says ``numpy<2``; it runs
  on NumPy 2 with the aliases :mod:`fr_numpy_compat` restores) plus its real
  dependencies ``requests`` and ``graphviz``. No kernel restart is needed for
  NumPy.
- matplotlib and OpenCV are installed only if missing (Colab's are kept), the
  same way (``<name>==<yours>`` in every command).
- GPU: MXNet 1.9.1's GPU wheels (``mxnet-cu117``) contain kernels for compute
  capabilities 5.0-8.6 (they also run on 8.9) and no PTX: P100, V100, T4,
  A100, A10, L4, RTX 20/30/40 work; Hopper (H100/H200, 9.0) and newer cannot
  run them, and get the CPU build. The CUDA 11 libraries they need
  (``nvidia-*-cu11``) go into fr_lib's own folder with ``pip install
  --target`` (see ``fr_numpy_compat.cuda11_dir``), never into site-packages,
  where they would replace another package's (e.g. torch's CUDA 12) copies.

Quiet on success (one line); on failure it prints one line naming the step and
the command to run, and exits 1. ``-v`` shows every command and pip's output.
"""
# Four parts: packages.py (what gets installed), environment.py (what is there,
# --check), steps.py (the steps for this machine), cli.py (the command line).
# None of them imports fr_lib or MXNet.
from .cli import main
from .environment import gpu_compute_capabilities, missing
from .packages import (BOOK_PACKAGES, CUDA11_LIBS, CUDA11_SONAMES, MXNET,  # noqa: F401
                       MXNET_DEPS, wanted_mxnet)
from .steps import Step, plan

__all__ = ["gpu_compute_capabilities", "plan", "missing", "main", "Step",
           "CUDA11_LIBS", "MXNET_DEPS", "BOOK_PACKAGES"]
