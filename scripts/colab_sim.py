"""Run the book's sections the way a reader's Colab does, on this machine.

    python scripts/colab_sim.py                 # CI: one cheap section per chapter
    python scripts/colab_sim.py --all           # every section in _toc.yml
    python scripts/colab_sim.py chapter_loss/lgm data/recordio   # these ones
    python scripts/colab_sim.py --tests         # + fr_lib's unit tests on NumPy 2
    python scripts/colab_sim.py --no-sections --tests-all   # every unit test
    python scripts/colab_sim.py --prepare       # only build (or find) the venv

What it simulates:

1. Colab's Python: a Python 3.12 venv with what Colab preinstalls and the book
   needs to *not* install (NumPy 2, pandas, matplotlib, scikit-learn, SciPy,
   OpenCV 4.12, ipykernel, nbclient, ...; the list is ``COLAB_PACKAGES``).
   It is built once and cached under ``FR_COLAB_CACHE`` (default
   ``~/.cache/gluon-fr/colab-sim``), keyed on a hash of that list and the
   Python version, like ``scripts/setup.sh``'s stamp.
2. A fresh runtime: each run copies the cached venv, gives it a stand-in
   ``google.colab`` module (imported at kernel start, as in Colab), an empty
   ``HOME``, and ``FR_REPO_URL`` set to this repository as a local git URL
   (``file://<repo>``, i.e. its *committed* HEAD; ``--repo-url`` to change).
3. For each section, in order: the notebook alone in an empty folder, executed
   with nbclient by that venv's kernel with ``FR_QUICK=1``. The first section's
   first cell pip-installs fr_lib from the URL and runs ``fr_install --colab``
   inside the kernel, exactly as on Colab; later sections find the install
   complete (their first cell only runs ``fr_install --check``).
4. With ``--tests``: fr_lib's unit tests in ``CI_TESTS`` (``--tests-all``:
   every non-slow one), this checkout's code
   (``PYTHONPATH=fr_lib/src``), run by pytest in the same NumPy-2 venv.

Prints pass/fail and the time of each section (and of its first cell), the
total, and exits 1 if anything failed. Executed notebooks are kept in the run
folder (printed) with ``--keep``.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

PYTHON = os.environ.get("FR_COLAB_PYTHON", "python3.12")
PYENV_VERSION = "3.12.1"  # for pyenv's python3.12 shim (ignored elsewhere)
# What Colab has preinstalled that matters here (late 2026: Python 3.12,
# NumPy 2, OpenCV 4.12 which requires NumPy 2, SciPy 1.18, ...). Pinned, so
# the cache key changes only when this list does.
COLAB_PACKAGES = [
    "numpy==2.2.6", "opencv-python==4.12.0.88", "pandas==3.1.1",
    "scipy==1.18.1", "scikit-learn==1.9.1", "matplotlib==3.11.2",
    "pillow==13.0.0", "requests", "pyyaml", "tqdm", "setuptools",
    # Colab's kernel is ipykernel 6, with IPython 8
    "ipykernel==6.29.5", "ipython==8.39.0", "nbclient==0.11.0",
    "nbformat==5.11.1", "pytest==9.2.0",
]
# One cheap section per chapter (checked: every chapter with notebooks must
# appear). Quick-mode times on 2 cores are in benchmarks/README.md.
DEFAULT_SECTIONS = [
    "book/chapter_introduction/face-recognition-task",
    "book/chapter_loss/margin-explorer",      # no training (MNIST ones: minutes)
    "book/chapter_data/recordio",
    "book/chapter_backbone/se-attention",
    "book/chapter_evaluation/verification-protocol",  # trains quick_face_model
    "book/chapter_training/mixed-precision",
    "book/chapter_deployment/verification-demo",  # ONNX, onnxruntime, widgets
]
# fr_lib's unit tests that need neither the book build nor a browser nor new
# virtual environments (--tests-all: all of them, 1,524 passed in 7 min on 2
# busy cores, 2026-12-06) ...
TEST_ARGS = ["-m", "not slow", "-q", "-p", "no:cacheprovider",
             "--ignore=tests/test_book_html.py",
             "--ignore=tests/test_book_sources.py",
             "--ignore=tests/test_python_versions.py"]
# ... and for --tests (CI) the files that exercise what NumPy 2 can break --
# the compatibility hook, kvstore processes, losses and metrics against NumPy
# references, the data formats and tools, ONNX, DALI, the installer, the
# first cell -- and none of those that mostly train networks: about a minute
# on 2 cores (the whole suite: minutes; CI runs it on NumPy 1.x).
# test_loss_advanced and test_partial_fc are left out to keep cold CI
# under 20 minutes: they use the same NumPy operations as test_loss_margin.
CI_TESTS = ["test_compat", "test_install", "test_first_cell", "test_launch",
            "test_loss_margin", "test_loss_metric",
            "test_loss_regularizer", "test_head",
            "test_metrics_verification", "test_align_metrics", "test_recordio",
            "test_binfile", "test_data_scripts", "test_sampler", "test_deploy",
            "test_dali", "test_checkpoint", "test_utils"]

STUB = '''"""Stand-in for Colab's google.colab (scripts/colab_sim.py): only its
presence in sys.modules matters to the book's first cell."""
'''

RUNNER = r'''
import json, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
# a copy of scripts/stepped_kernel.py lies beside this runner: nbclient's own
# client can miss a reply until the cell timeout (ipywidgets cells)
from stepped_kernel import SteppedKernelManager

src, dst, folder, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


nb = nbformat.read(src, as_version=4)
client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                        resources={"metadata": {"path": folder}},
                        kernel_manager_class=SteppedKernelManager)
result = {"ok": True, "error": None}
try:
    client.execute()
except (CellExecutionError, CellTimeoutError) as e:
    result["ok"] = False
    result["error"] = str(e)[-3000:]
except Exception as e:  # kernel died, ...
    result["ok"] = False
    result["error"] = f"{type(e).__name__}: {e}"[-3000:]
nbformat.write(nb, dst)
code = [c for c in nb.cells if c.cell_type == "code"]
first = code[0] if code else None
if first is not None:
    t = first.get("metadata", {}).get("execution", {})
    try:
        from datetime import datetime
        a = datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))
        b = datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
        result["first_cell_s"] = (b - a).total_seconds()
    except (KeyError, ValueError):
        result["first_cell_s"] = None
    text = []
    for out in first.get("outputs", []):
        if out.get("output_type") == "stream":
            text.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            text.append("<displayed value>")
    result["first_cell_output"] = "".join(text)
print("RESULT " + json.dumps(result))
'''


def log(msg):
    print(f"[colab-sim] {msg}", flush=True)


def cache_root():
    return os.environ.get("FR_COLAB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "gluon-fr", "colab-sim")


def python_env():
    env = dict(os.environ)
    env.setdefault("PYENV_VERSION", PYENV_VERSION)
    return env


def base_key():
    try:
        version = subprocess.run(
            [PYTHON, "-c", "import sys; print(sys.version)"], capture_output=True,
            text=True, env=python_env(), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"colab_sim: cannot run {PYTHON} ({err}); Colab uses "
                         "Python 3.12: install it or set FR_COLAB_PYTHON") from None
    text = "\n".join([version, *COLAB_PACKAGES, STUB])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_base():
    """The cached Colab-like venv (built once per ``COLAB_PACKAGES``)."""
    base = os.path.join(cache_root(), f"base-{base_key()}")
    if os.path.exists(os.path.join(base, ".complete")):
        log(f"Colab-like venv: {base} (cached)")
        return base, 0.0
    start = time.time()
    os.makedirs(cache_root(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="base-tmp-", dir=cache_root())
    log(f"building the Colab-like venv ({PYTHON}, NumPy 2, OpenCV 4.12, ...)")
    try:
        subprocess.run([PYTHON, "-m", "venv", tmp], check=True, env=python_env())
        py = os.path.join(tmp, "bin", "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"],
                       check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *COLAB_PACKAGES],
                       check=True)
        # the stand-in google.colab (a namespace package: google.protobuf
        # and others keep working), in site-packages as on Colab
        site = subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()
        os.makedirs(os.path.join(site, "google", "colab"), exist_ok=True)
        with open(os.path.join(site, "google", "colab", "__init__.py"), "w") as f:
            f.write(STUB)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(base):  # a half-built one from an interrupted run
        shutil.rmtree(base)
    os.rename(tmp, base)
    # venvs are not relocatable: fix the absolute paths venv wrote
    _relocate(base, tmp)
    with open(os.path.join(base, ".complete"), "w") as f:
        f.write("\n".join(COLAB_PACKAGES) + "\n")
    took = time.time() - start
    log(f"built {base} in {took:.0f} s")
    return base, took


def _relocate(venv, old):
    """Point a copied venv's text files (pyvenv.cfg, bin/ scripts) at ``venv``."""
    for path in [os.path.join(venv, "pyvenv.cfg")] + [
            os.path.join(venv, "bin", n) for n in os.listdir(os.path.join(venv, "bin"))]:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if old in text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace(old, venv))


def fresh_runtime(base, workdir):
    """A copy of the base venv plus an empty HOME and IPython profile that
    imports google.colab at kernel start (what Colab's kernel does)."""
    venv = os.path.join(workdir, "venv")
    shutil.copytree(base, venv, symlinks=True)
    _relocate(venv, base)
    home = os.path.join(workdir, "home")
    startup = os.path.join(workdir, "ipython", "profile_default", "startup")
    os.makedirs(home)
    os.makedirs(startup)
    with open(os.path.join(startup, "00-colab.py"), "w") as f:
        f.write("import google.colab  # as Colab's kernel does at start\n")
    return venv, home


def seed_quick_cache(source, home):
    """Copy a trained quick_face_model cache into the runtime's data root
    (``$HOME/.mxnet/datasets/face/quick``, the default the kernel sees)."""
    if not os.path.isdir(source) or not any(
            n.startswith("model-") for n in os.listdir(source)):
        log(f"--seed-quick: {source} holds no trained model; the sections train it")
        return
    target = os.path.join(home, ".mxnet", "datasets", "face", "quick")
    shutil.copytree(source, target)
    log(f"quick_face_model cache copied from {source} (not trained in this runtime)")


def kernel_env(venv, home, workdir, repo_url, pip_cache):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHON", "JUPYTER", "IPYTHON",
                                "FR_", "CONDA", "MPLBACKEND"))}
    env.update({
        "HOME": home,
        "PATH": os.path.join(venv, "bin") + os.pathsep + env.get("PATH", ""),
        "VIRTUAL_ENV": venv,
        "IPYTHONDIR": os.path.join(workdir, "ipython"),
        "JUPYTER_CONFIG_DIR": os.path.join(home, ".jupyter"),
        "PIP_CACHE_DIR": pip_cache,
        "FR_QUICK": "1",
        "FR_REPO_URL": repo_url,
    })
    return env


def notebook_sections():
    """Notebook sections of ``_toc.yml``, in order (paths without suffix)."""
    import sync_notebooks
    return [f for f in sync_notebooks.toc_files()
            if os.path.exists(os.path.join(ROOT, f + ".ipynb"))]


def chapter(section):
    return section.split("/")[1]


def resolve(names, sections):
    chosen = []
    for name in names:
        name = name.removesuffix(".ipynb").removeprefix("book/")
        hits = [s for s in sections
                if s == "book/" + name or s.endswith("/" + name)
                or s == "book/chapter_" + name]
        if len(hits) != 1:
            raise SystemExit(f"colab_sim: section {name!r} matches {len(hits)} "
                             f"sections of _toc.yml (write e.g. loss/lgm, chapter_loss/lgm "
                             "or lgm)")
        chosen.append(hits[0])
    return chosen


def default_sections(sections):
    missing = sorted({chapter(s) for s in sections}
                     - {chapter(s) for s in DEFAULT_SECTIONS})
    unknown = [s for s in DEFAULT_SECTIONS if s not in sections]
    if missing or unknown:
        raise SystemExit("colab_sim: DEFAULT_SECTIONS must name one section of "
                         f"every chapter: missing {missing}, not in _toc.yml "
                         f"{unknown}")
    return list(DEFAULT_SECTIONS)


def run_section(section, venv, env, workdir, timeout, sync_cell=False):
    folder = os.path.join(workdir, "sections", section.replace("/", "__"))
    os.makedirs(folder)  # empty: no clone, no data next to the notebook
    name = os.path.basename(section) + ".ipynb"
    shutil.copy(os.path.join(ROOT, section + ".ipynb"), os.path.join(folder, name))
    if sync_cell:  # the copy gets today's generated first cell
        import sync_notebooks
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        nb = sync_notebooks.sync(path, nb, sync_notebooks.setup_cell_source())
        with open(path, "w", encoding="utf-8") as f:
            json.dump(nb, f, ensure_ascii=False, indent=1)
    runner = os.path.join(workdir, "run_notebook.py")
    start = time.time()
    proc = subprocess.run(
        [os.path.join(venv, "bin", "python"), runner, name,
         os.path.join(workdir, "executed", name), folder, str(timeout)],
        cwd=folder, env=env, capture_output=True, text=True)
    took = time.time() - start
    result = {"ok": False, "error": (proc.stdout + proc.stderr)[-3000:]}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    result["seconds"] = took
    return result


def first_cell_problem(result):
    """The first cell must print at most one short line and show no value."""
    text = (result.get("first_cell_output") or "").strip()
    if "<displayed value>" in text:
        return "first cell displays a value"
    if len(text.splitlines()) > 1 or len(text) > 120:
        return f"first cell printed more than one short line: {text[:300]!r}"
    return None


def run_tests(venv, env, extra, everything=False):
    # this checkout's fr_lib (the tests' own version), in the NumPy-2 venv
    env = dict(env, PYTHONPATH=os.path.join(ROOT, "fr_lib", "src"))
    env.pop("FR_QUICK", None)
    where = ["tests"] if everything else [f"tests/{n}.py" for n in CI_TESTS]
    gone = [w for w in where if not os.path.exists(os.path.join(ROOT, w))]
    if gone:
        raise SystemExit(f"colab_sim: CI_TESTS names missing files: {gone}")
    cmd = [os.path.join(venv, "bin", "python"), "-m", "pytest", *where,
           *TEST_ARGS, *extra]
    log("NumPy-2 unit tests: " + " ".join(cmd[1:]))
    start = time.time()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return rc, time.time() - start


def install_directly(venv, env):
    """What the first cell does, for --tests without sections."""
    py = os.path.join(venv, "bin", "python")
    for cmd in ([py, "-m", "pip", "install", "-q", "--no-deps",
                 f"git+{env['FR_REPO_URL']}#subdirectory=fr_lib"],
                [py, "-m", "fr_install", "--colab"]):
        log("$ " + " ".join(cmd[1:]))
        if subprocess.run(cmd, env=env, cwd=env["HOME"]).returncode:
            raise SystemExit(f"colab_sim: {' '.join(cmd[1:])} failed")


def worktree_repo(workdir):
    """A one-commit git repository holding this checkout's fr_lib/ as it is
    on disk (uncommitted changes included), for --worktree."""
    repo = os.path.join(workdir, "worktree-repo")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
         "--", "fr_lib"], cwd=ROOT, capture_output=True, text=True,
        check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue  # deleted in the work tree
        dst = os.path.join(repo, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    git = ["git", "-c", "user.name=colab-sim", "-c", "user.email=colab-sim@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "work tree"]):
        subprocess.run(git + cmd, cwd=repo, check=True)
    return f"file://{repo}"


def warn_uncommitted(repo_url):
    if repo_url != f"file://{ROOT}":
        return
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "fr_lib"],
                           cwd=ROOT, capture_output=True, text=True).stdout
    if dirty.strip():
        log("note: fr_lib/ has uncommitted changes; the first cell installs "
            "the committed HEAD (pip clones the repository)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("sections", nargs="*",
                        help="sections to run (e.g. chapter_loss/lgm)")
    parser.add_argument("--all", action="store_true",
                        help="every notebook section in _toc.yml")
    parser.add_argument("--tests", action="store_true",
                        help="also run fr_lib's unit tests in the NumPy-2 venv "
                             "(CI_TESTS: those NumPy 2 can break, no training)")
    parser.add_argument("--tests-all", action="store_true",
                        help="as --tests, with every non-slow unit test")
    parser.add_argument("--no-sections", action="store_true",
                        help="run no section (with --tests: install directly)")
    parser.add_argument("--prepare", action="store_true",
                        help="only build (or find) the cached Colab-like venv")
    parser.add_argument("--repo-url", default=f"file://{ROOT}",
                        help="what FR_REPO_URL is in the kernel (default: this "
                             "repository's committed HEAD)")
    parser.add_argument("--worktree", action="store_true",
                        help="install fr_lib/ as it is on disk, uncommitted "
                             "changes included (a throw-away one-commit clone)")
    parser.add_argument("--sync-cell", action="store_true",
                        help="give each copied notebook the first cell that "
                             "scripts/sync_notebooks.py generates now")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds per cell (default 600; the slowest "
                             "quick-mode cell takes about a minute)")
    parser.add_argument("--seed-quick", metavar="DIR",
                        help="copy this quick_face_model cache (e.g. the book "
                             "build's ~/.mxnet/datasets/face/quick) into the "
                             "runtime's data root first, so that the evaluation "
                             "and deployment sections load the model instead of "
                             "training it again (CI: the book build has just "
                             "trained it; about 90 s saved)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run folder (venv, executed notebooks)")
    parser.add_argument("--pytest-args", default="",
                        help="extra pytest arguments for --tests (one string)")
    args = parser.parse_args(argv)

    everything = notebook_sections()
    if args.no_sections or args.prepare:
        sections = []
    elif args.all:
        sections = everything
    elif args.sections:
        sections = resolve(args.sections, everything)
    else:
        sections = default_sections(everything)

    t0 = time.time()
    base, build_s = ensure_base()
    if args.prepare:
        return 0
    workdir = tempfile.mkdtemp(prefix="fr-colab-sim-")
    status = 0
    try:
        if args.worktree:
            args.repo_url = worktree_repo(workdir)
        warn_uncommitted(args.repo_url)
        t1 = time.time()
        venv, home = fresh_runtime(base, workdir)
        copy_s = time.time() - t1
        with open(os.path.join(workdir, "run_notebook.py"), "w") as f:
            f.write(RUNNER)
        shutil.copy(os.path.join(ROOT, "scripts", "stepped_kernel.py"), workdir)
        os.makedirs(os.path.join(workdir, "executed"))
        pip_cache = os.environ.get("PIP_CACHE_DIR") or subprocess.run(
            [os.path.join(venv, "bin", "python"), "-m", "pip", "cache", "dir"],
            capture_output=True, text=True).stdout.strip() or os.path.join(
            os.path.expanduser("~"), ".cache", "pip")
        env = kernel_env(venv, home, workdir, args.repo_url, pip_cache)
        if args.seed_quick:
            seed_quick_cache(args.seed_quick, home)
        log(f"runtime {workdir} (venv copied in {copy_s:.0f} s); "
            f"FR_REPO_URL={args.repo_url}; {len(sections)} section(s)")
        rows = []
        for i, section in enumerate(sections, 1):
            result = run_section(section, venv, env, workdir, args.timeout,
                                 args.sync_cell)
            problem = None if not result["ok"] else first_cell_problem(result)
            ok = result["ok"] and problem is None
            first = result.get("first_cell_s")
            first_text = f"{first:5.1f}" if isinstance(first, (int, float)) else "    ?"
            line = (f"{'PASS' if ok else 'FAIL'} {result['seconds']:6.1f} s "
                    f"(first cell {first_text} s)  {section}")
            log(f"[{i}/{len(sections)}] {line}")
            if not ok:
                status = 1
                detail = problem or result.get("error") or ""
                print("    " + detail.strip().replace("\n", "\n    ")[-2500:],
                      flush=True)
            rows.append((section, ok, result["seconds"], first))
        tests_s = None
        if args.tests or args.tests_all:
            if not sections:
                install_directly(venv, env)
            rc, tests_s = run_tests(venv, env, args.pytest_args.split(),
                                    everything=args.tests_all)
            status = status or (1 if rc else 0)
        passed = sum(ok for _, ok, _, _ in rows)
        sections_s = sum(s for _, _, s, _ in rows)
        log(f"sections: {passed}/{len(rows)} passed in {sections_s:.0f} s"
            + (f"; unit tests {'passed' if status == 0 or not rows else 'ran'} "
               f"in {tests_s:.0f} s" if tests_s is not None else "")
            + f"; venv build {build_s:.0f} s; total {time.time() - t0:.0f} s")
        failed = [s for s, ok, _, _ in rows if not ok]
        if failed:
            log("failed: " + " ".join(failed))
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
