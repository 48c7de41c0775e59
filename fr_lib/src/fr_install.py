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
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

__all__ = ["gpu_compute_capabilities", "plan", "missing", "main", "Step",
           "CUDA11_LIBS", "MXNET_DEPS", "BOOK_PACKAGES"]

MXNET = "1.9.1"
# mxnet's real dependencies (its metadata also says numpy<2, which is stale).
MXNET_DEPS = ["requests>=2.20,<3", "graphviz>=0.8.1,<0.9"]
# What libmxnet.so of mxnet-cu117 1.9.1 needs (readelf -d: NEEDED) besides the
# driver's libcuda.so.1 and the system's libgomp/libstdc++, and the wheel that
# provides each: libcudart.so.11.0, libcublas.so.11 (+ libcublasLt),
# libcufft.so.10, libcurand.so.10, libcusolver.so.11, libcusparse.so.11,
# libnvrtc.so.11.2, libnvToolsExt.so.1, libcudnn.so.8, libnccl.so.2.
CUDA11_LIBS = ["nvidia-cuda-runtime-cu11", "nvidia-cublas-cu11",
               "nvidia-cufft-cu11", "nvidia-curand-cu11", "nvidia-cusolver-cu11",
               "nvidia-cusparse-cu11", "nvidia-cuda-nvrtc-cu11",
               "nvidia-nvtx-cu11", "nvidia-cudnn-cu11==8.9.*", "nvidia-nccl-cu11"]
CUDA11_SONAMES = ["libcudart.so.11.0", "libcublas.so.11", "libcufft.so.10",
                  "libcurand.so.10", "libcusolver.so.11", "libcusparse.so.11",
                  "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8",
                  "libnccl.so.2"]
MIN_CC, MAX_CC = (5, 0), (8, 9)
# The packages the notebooks import (module -> pip requirement).
BOOK_PACKAGES = {
    "gluoncv": "gluoncv==0.10.5.post0",
    "skimage": "scikit-image",
    "mlxtend": "mlxtend",
    "sklearn": "scikit-learn",
    "ipywidgets": "ipywidgets>=8,<9",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "pandas": "pandas",
    "scipy": "scipy",
    "IPython": "ipython",
    "matplotlib_inline": "matplotlib-inline",
    # gluoncv's own dependencies (it is installed with --no-deps, so that it
    # cannot add a second OpenCV next to a headless one)
    "portalocker": "portalocker",
    "yacs": "yacs",
    "autocfg": "autocfg",
    "PIL": "Pillow",
}
JUPYTER_PACKAGES = {"jupyter_core": "jupyter", "ipykernel": "ipykernel",
                    "nbclient": "nbclient", "nbconvert": "nbconvert"}
# NVIDIA DALI 1.35.0: the last release with the MXNet plugin; CUDA 12 build,
# whose CPU pipelines also run without a GPU. Wheels for Python <= 3.12 only.
DALI = "nvidia-dali-cuda120==1.35.0"
D2L = "d2l==1.0.3"
FONTS = ["fonts-wqy-microhei", "fonts-noto-cjk"]


class Step:
    """One named install step: a command, or a Python callable."""

    def __init__(self, name, command=None, func=None, soft=False):
        self.name, self.command, self.func, self.soft = name, command, func, soft

    def text(self):
        if self.command is not None:
            return " ".join(_quote(c) for c in self.command)
        return f"python -c '{self.func.__doc__ or self.name}'"

    def __repr__(self):
        return f"Step({self.name!r}, {self.text()!r})"


def _quote(arg):
    return f'"{arg}"' if any(c in arg for c in "<>*; ") else arg


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


def wanted_mxnet(caps):
    """``(distribution, notes)`` for these GPU compute capabilities."""
    notes = []
    usable = [c for c in caps if MIN_CC <= c <= MAX_CC]
    for cap in caps:
        if cap not in usable:
            notes.append(f"GPU with compute capability {cap[0]}.{cap[1]} cannot run "
                         f"MXNet {MXNET} (its GPU wheels cover 5.0-8.6, also "
                         "8.9; no PTX): using the CPU build")
    if usable:
        notes.append(f"installing mxnet-cu117 for {len(usable)} supported GPU(s)")
        return "mxnet-cu117", notes
    if not caps:
        notes.append("no NVIDIA GPU found: installing the CPU build")
    return "mxnet", notes


def plan(caps, python_version=None, mode="lib", state=None):
    """The install steps for this machine.

    Parameters
    ----------
    caps : list of (int, int)
        GPU compute capabilities (``[]``: no GPU).
    python_version : (int, int), optional
        Defaults to the running interpreter's.
    mode : {'lib', 'book', 'colab'}
    state : dict, optional
        What is installed, for tests: ``numpy``, ``mxnet`` (distribution name
        or None), ``keep`` (list of ``name==version``), ``modules`` (set of
        importable top-level modules), ``cuda11_dir``. Read from this
        environment when omitted.

    Returns
    -------
    steps : list of Step
    notes : list of str
    """
    if mode not in ("lib", "book", "colab"):
        raise ValueError(f"mode must be 'lib', 'book' or 'colab', not {mode!r}")
    pyver = tuple((python_version or sys.version_info)[:2])
    if state is None:
        state = {"numpy": _installed("numpy"), "mxnet": _installed_mxnet()[0],
                 "keep": _keep_pins(), "modules": None,
                 "cuda11_dir": cuda11_dir()}
    modules = state.get("modules")

    def has(module):
        return _has_module(module) if modules is None else module in modules

    py = sys.executable
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    keep = list(state.get("keep", []))
    steps = []
    dist, notes = wanted_mxnet(caps)

    # 1. NumPy: only if there is none (then the newest for this Python).
    if state.get("numpy") is None:
        steps.append(Step("numpy", pip + ["numpy>=1.21"]))
    # 2. MXNet, without its stale numpy<2 pin.
    if state.get("mxnet") != dist:
        if state.get("mxnet") is not None:
            # mxnet and mxnet-cu117 install the same module: remove the other.
            steps.append(Step(f"remove {state['mxnet']}",
                              [py, "-m", "pip", "uninstall", "-y", "-q",
                               state["mxnet"]]))
        steps.append(Step(dist, pip + ["--no-deps", f"{dist}=={MXNET}"]))
    deps = keep + MXNET_DEPS + ["numpy>=1.21", "pyyaml", "tqdm"]
    if pyver >= (3, 12):
        deps.append("setuptools")  # provides distutils, which mxnet imports
    steps.append(Step("mxnet dependencies", pip + deps))
    # 3. GPU: the CUDA 11 libraries, into fr_lib's own folder.
    if dist.startswith("mxnet-cu"):
        steps.append(Step("CUDA 11 libraries",
                          pip + ["--upgrade", "--no-deps", "--target",
                                 state["cuda11_dir"]] + CUDA11_LIBS))
    elif os.path.isdir(state.get("cuda11_dir") or ""):
        steps.append(Step("remove unused CUDA 11 libraries",
                          [py, "-c", "import shutil, sys; shutil.rmtree(sys.argv[1])",
                           state["cuda11_dir"]]))
    # 4. What the notebooks import.
    if mode in ("book", "colab"):
        book = keep + ["numpy>=1.21"] + [req for module, req in BOOK_PACKAGES.items()
                                          if module != "gluoncv"]
        if pyver <= (3, 12):
            book.append(DALI)
        else:
            notes.append(f"NVIDIA DALI has no wheel for Python {pyver[0]}."
                         f"{pyver[1]}: the DALI section skips its pipelines")
        if not has("matplotlib"):
            book.append("matplotlib")
        if not has("cv2"):
            # OpenCV 5 moved the Haar cascades fr_lib's face detector uses
            book.append("opencv-python>=4.5,<5")
        if mode == "book":
            book += list(JUPYTER_PACKAGES.values())
        steps.append(Step("book packages", pip + book))
        # gluoncv and d2l without their dependencies: gluoncv would add
        # opencv-python beside a headless OpenCV; d2l pins numpy==1.23.5 and
        # other exact releases (no wheels on Python >= 3.12). Their real
        # dependencies are in the step above.
        steps.append(Step("gluoncv and d2l",
                          pip + ["--no-deps", BOOK_PACKAGES["gluoncv"], D2L]))
    if mode == "colab" and not _fonts_present():
        steps.append(Step("Chinese fonts (apt-get)",
                          ["sh", "-c", "apt-get update -qq && apt-get install -y "
                           "-qq " + " ".join(FONTS) + " >/dev/null"], soft=True))
    return steps, notes


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


def _build_ops(verbose):
    """Compile fr_lib's native operators once (a line before, one after)."""
    start = time.time()
    if not verbose:  # verbose: fr_lib.ops prints its own progress lines
        print("fr_install: compiling fr_lib's native CPU operators (once, "
              "about 30-90 s on 2 cores) ...", flush=True)
    result = subprocess.run([sys.executable, "-m", "fr_lib.ops"],
                            capture_output=not verbose, text=True)
    if result.returncode == 0:
        return f"native operators built in {time.time() - start:.0f} s"
    print("fr_install: fr_lib's native operators did not build; fr_lib will "
          "use its pure-MXNet formulas (slower on CPU)", file=sys.stderr)
    return None


def _write_pth():
    """import fr_numpy_compat; fr_numpy_compat.write_pth()"""
    import fr_numpy_compat
    fr_numpy_compat.write_pth()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fr_install", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--book", action="store_true",
                       help="also every package the notebooks import + Jupyter")
    group.add_argument("--colab", action="store_true",
                       help="as --book without Jupyter, plus CJK fonts (apt-get)")
    parser.add_argument("--check", action="store_true",
                        help="install nothing; exit 1 and list what is missing")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every command and pip's output")
    parser.add_argument("--gpu-cc", action="append", default=None, metavar="X.Y",
                        help="pretend the GPUs have these compute capabilities "
                             "(repeat per GPU; 'none' for no GPU)")
    args = parser.parse_args(argv)
    mode = "colab" if args.colab else "book" if args.book else "lib"
    if args.gpu_cc is None:
        caps = gpu_compute_capabilities()
    else:
        caps = [tuple(int(v) for v in cc.split("."))
                for cc in args.gpu_cc if cc != "none"]

    if args.check:
        gaps = missing(mode, caps)
        if gaps:
            print("fr_install: missing: " + ", ".join(gaps) +
                  f"\nfix: {sys.executable} -m fr_install" +
                  ("" if mode == "lib" else f" --{mode}"), file=sys.stderr)
            return 1
        if args.verbose:
            print(f"fr_install: everything for '{mode}' is installed")
        return 0

    steps, notes = plan(caps, mode=mode)
    if args.dry_run:
        for note in notes:
            print(f"# {note}")
        for step in steps:
            print(f"$ {step.text()}")
        print(f"$ {sys.executable} -m fr_lib.ops")
        return 0
    if args.verbose:
        for note in notes:
            print(f"fr_install: {note}")
    log = tempfile.NamedTemporaryFile("w", prefix="fr_install-", suffix=".log",
                                      delete=False)
    start = time.time()
    for step in steps:
        if args.verbose:
            print(f"$ {step.text()}", flush=True)
        if step.command is None:
            step.func()
            continue
        if args.verbose:
            code = subprocess.run(step.command).returncode
        else:
            log.write(f"$ {step.text()}\n")
            log.flush()
            code = subprocess.run(step.command, stdout=log,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            where = "" if args.verbose else f" (its output: {log.name})"
            if step.soft:
                print(f"fr_install: warning: step '{step.name}' failed{where}; "
                      f"figures may lack Chinese glyphs. Run: {step.text()}",
                      file=sys.stderr)
                continue
            print(f"fr_install: step '{step.name}' failed (exit {code}){where}. "
                  f"Run: {step.text()}", file=sys.stderr)
            return 1
    log.close()
    _write_pth()
    built = _build_ops(args.verbose)
    dist, _ = wanted_mxnet(caps)
    what = [f"{dist} {MXNET}"] + (["book packages"] if mode != "lib" else [])
    if built:
        what.append(built)
    print(f"fr_install: ready ({', '.join(what)}; {time.time() - start:.0f} s)")
    if not args.verbose:
        os.remove(log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
