"""fr_lib installs and runs on Python 3.10-3.13 and NumPy 1.x and 2.x, for real.

For each interpreter we build a fresh venv and go through what a user meets:
fr_lib without MXNet (clear error), with MXNet 1.9.1 on the NumPy pip picked
(NumPy 2) and on NumPy 1.26, `import mxnet` without fr_lib, and `pip install
-e fr_lib` into an environment that already has NumPy 2 (it must keep it).
We also resolve requirements.txt with each Python's constraints file. Python
3.11 is the main environment of every other test. Needs the package registry
(pip); the pip cache makes reruns quick.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = ("import fr_lib, mxnet as mx, numpy as np; "
         "x = mx.nd.array([[1., 2.], [3., 4.]]); "
         "y = fr_lib.metrics.cosine_similarity(x, x).asnumpy(); "
         "assert abs(y[0, 1] - 11 / (5 ** 0.5 * 5)) < 1e-6, y; "
         "print('OK', fr_lib.__version__, mx.__version__, np.__version__)")
# no fr_lib: what a kvstore server process or a user's script does
MXNET_ALONE = ("import mxnet as mx, numpy as np; "
               "a = mx.nd.array(np.arange(6.).reshape(2, 3)); "
               "print('OK', (a * 2).sum().asscalar(), mx.np.PZERO, np.__version__)")

_SOURCE_TREE = threading.Lock()  # one writer of fr_lib/ at a time (jobs run in threads)
CONSTRAINTS = {"3.10": "constraints-py310.txt", "3.11": "constraints.txt",
               "3.12": "constraints-py312.txt"}


def find_python(version):
    """python<version> on PATH, or one installed by pyenv."""
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python{version}")] + sorted(
        glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin",
                               f"python{version}")), reverse=True)
    for exe in filter(None, candidates):
        out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True)
        if out.stdout.strip() == version:
            return exe
    return None


def need_python(version):
    exe = find_python(version)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"python{version} is not installed on this CI machine")
        pytest.skip(f"python{version} not installed")
    return exe


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


def clean_env():
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for key in ("PYTHONPATH", "FR_NUMPY_COMPAT", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def _pins_resolve(version, tmp_path):
    """requirements.txt + this Python's constraints resolve to wheels only."""
    exe = need_python(version)
    report = tmp_path / "report.json"
    result = run([exe, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                  "-q", "--only-binary=:all:", "--report", str(report),
                  "-r", "requirements.txt", "-c", CONSTRAINTS[version]],
                 cwd=ROOT, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    found = {item["metadata"]["name"].lower(): item["metadata"]["version"]
             for item in json.loads(report.read_text())["install"]}
    assert found["onnxruntime"] and found["jupyter-book"].startswith("1.")
    if version == "3.12":
        assert found["numpy"].startswith("2.")
        assert "mxnet" not in found and "d2l" not in found  # requirements-nodeps.txt
        nodeps = run([exe, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                      "-q", "--only-binary=:all:", "--no-deps",
                      "-r", "requirements-nodeps.txt"], cwd=ROOT, env=clean_env())
        assert nodeps.returncode == 0, nodeps.stderr[-3000:]
    else:
        assert found["numpy"] == "1.23.5" and found["mxnet"] == "1.9.1"


# Python 3.11's constraints.txt is resolved and installed for real by every CI
# run (scripts/setup.sh builds the main venv with it): only the others here.
PINS = [v for v in sorted(CONSTRAINTS) if v != "3.11"]


@pytest.mark.slow
@pytest.mark.parametrize("version", PINS)
def test_pins_resolve(version, jobs):
    jobs[("pins", version)].result()  # re-raises the job's failure or skip


# 3.12 with NumPy 2 is the Colab simulation's venv (scripts/colab_sim.py,
# run by CI): the fresh-venv scenario covers the oldest and the newest Python.
FRESH = ["3.10", "3.13"]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Every scenario of this file, started at once in threads: each is
    mostly waiting on pip and the network, so together they take about as
    long as the slowest one (sequentially: minutes). Each test then checks
    its own job's outcome."""
    from concurrent.futures import ThreadPoolExecutor
    work = [(("pins", v), _pins_resolve, v) for v in PINS]
    work += [(("fresh", v), _fresh_venv, v) for v in FRESH]
    work += [(("wheel", None), _wheel_install_has_the_pth, None)]
    pool = ThreadPoolExecutor(len(work))
    futures = {}
    for key, fn, version in work:
        tmp = tmp_path_factory.mktemp("-".join(str(k) for k in key if k))
        futures[key] = pool.submit(fn, *((version, tmp) if version else (tmp,)))
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.slow
@pytest.mark.parametrize("version", FRESH)
def test_fresh_venv(version, jobs):
    jobs[("fresh", version)].result()


def _fresh_venv(version, tmp_path):
    exe = need_python(version)
    venv = tmp_path / "venv"
    assert run([exe, "-m", "venv", str(venv)]).returncode == 0
    py = str(venv / "bin" / "python")
    env = clean_env()
    cwd = str(tmp_path)  # not the repository, so nothing is imported from it

    def pip(*args):
        result = run([py, "-m", "pip", "install", "-q", *args], env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]

    def python(code):
        return run([py, "-c", code], env=env, cwd=cwd)

    def numpy_version():
        return python("import numpy; print(numpy.__version__)").stdout.strip()

    # 1. An environment that already has NumPy 2: `pip install -e fr_lib`
    #    keeps it, and importing fr_lib without MXNet says what to run.
    pip("numpy>=2")
    before = numpy_version()
    with _SOURCE_TREE:  # an editable install writes egg-info into fr_lib/
        pip("-e", os.path.join(ROOT, "fr_lib"))
    assert numpy_version() == before
    site = python("import sysconfig; print(sysconfig.get_paths()['purelib'])")
    assert os.path.exists(os.path.join(site.stdout.strip(), "fr_numpy_compat.pth"))
    result = python("import fr_lib")
    assert result.returncode != 0
    assert "fr_lib needs MXNet 1.9.1, which is not installed" in result.stderr
    assert "fr_install" in result.stderr

    # 2. MXNet without its stale numpy<2 pin: works on NumPy 2, with and
    #    without fr_lib (setuptools provides distutils on 3.12+).
    pip("--no-deps", "mxnet==1.9.1")
    pip("requests>=2.20,<3", "graphviz>=0.8.1,<0.9", "setuptools")
    assert numpy_version() == before
    for code in (MXNET_ALONE, CHECK):
        result = python(code)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("OK"), result.stdout
        assert result.stdout.split()[-1] == before

    # 3. And on NumPy 1.x (1.26.4 has wheels for 3.10-3.12).
    if version != "3.13":
        pip("numpy==1.26.4")
        for code in (MXNET_ALONE, CHECK):
            result = python(code)
            assert result.returncode == 0, result.stderr[-3000:]
            assert result.stdout.split()[-1] == "1.26.4"


@pytest.mark.slow
def test_wheel_install_has_the_pth(jobs):
    jobs[("wheel", None)].result()


def _wheel_install_has_the_pth(tmp_path):
    """A regular (non-editable) install puts fr_numpy_compat.pth in site-packages."""
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    py = str(venv / "bin" / "python")
    wheels = tmp_path / "wheels"
    # built from a copy: pip builds in the source tree, which the fresh-venv
    # jobs are installing from at the same time
    source = tmp_path / "fr_lib"
    with _SOURCE_TREE:
        shutil.copytree(os.path.join(ROOT, "fr_lib"), source,
                        ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                      "__pycache__"))
    result = run([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                  str(source)], env=clean_env(), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = glob.glob(str(wheels / "fr_lib-*.whl"))
    result = run([py, "-m", "pip", "install", "-q", "--no-deps", wheel],
                 env=clean_env(), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
               ).stdout.strip()
    pth = os.path.join(site, "fr_numpy_compat.pth")
    assert os.path.exists(pth)
    assert os.path.exists(os.path.join(site, "fr_numpy_compat.py"))
    # the hook runs at start-up without importing NumPy (not installed here)
    result = run([py, "-c", "import sys; print('fr_numpy_compat' in sys.modules)"],
                 env=clean_env(), cwd=str(tmp_path))
    assert result.stdout.strip() == "True", result.stderr
    # uninstalling removes both
    result = run([py, "-m", "pip", "uninstall", "-q", "-y", "fr_lib"], env=clean_env())
    assert result.returncode == 0 and not os.path.exists(pth)
