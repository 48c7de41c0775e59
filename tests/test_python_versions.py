"""fr_lib installs and imports on Python 3.10 and 3.12, for real.

For each interpreter we build a fresh venv and go through what a user meets:
fr_lib without MXNet (clear error), with MXNet 1.9.1 (works and computes), and
with NumPy 2 (clear error). Python 3.11 is the main environment of every other
test. Needs the package registry (pip); the pip cache makes reruns quick.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = ("import fr_lib, mxnet as mx, numpy as np; "
         "x = mx.nd.array([[1., 2.], [3., 4.]]); "
         "y = fr_lib.metrics.cosine_similarity(x, x).asnumpy(); "
         "assert abs(y[0, 1] - 11 / (5 ** 0.5 * 5)) < 1e-6, y; "
         "print('OK', fr_lib.__version__, mx.__version__, np.__version__)")


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


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_fresh_venv(version, tmp_path):
    exe = find_python(version)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"python{version} is not installed on this CI machine")
        pytest.skip(f"python{version} not installed")
    venv = tmp_path / "venv"
    assert run([exe, "-m", "venv", str(venv)]).returncode == 0
    py = str(venv / "bin" / "python")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    cwd = str(tmp_path)  # not the repository, so nothing is imported from it

    def pip(*args):
        result = run([py, "-m", "pip", "install", "-q", *args], env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]

    def python(code):
        return run([py, "-c", code], env=env, cwd=cwd)

    # 1. fr_lib alone: importing it names the missing package and the command.
    pip("-e", os.path.join(ROOT, "fr_lib"))
    result = python("import fr_lib")
    assert result.returncode != 0
    assert "fr_lib needs MXNet 1.9.1, which is not installed" in result.stderr
    assert "pip install mxnet==1.9.1" in result.stderr

    # 2. With MXNet and the NumPy pin for this Python (3.12: no distutils in the
    #    standard library -- setuptools provides it; NumPy 1.26 needs np.bool).
    numpy = "numpy==1.23.5" if version == "3.10" else "numpy==1.26.4"
    pip("mxnet==1.9.1", numpy, "setuptools")
    result = python(CHECK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK 0."), result.stdout

    # 3. NumPy 2 (what a plain `pip install -U numpy` does): a clear error.
    pip("numpy==2.2.6")
    result = python("import fr_lib")
    assert result.returncode != 0
    assert "NumPy 2.2.6" in result.stderr
    assert f"pip install {numpy}" in result.stderr
    assert "Traceback" in result.stderr  # an ImportError, not a crash
    assert "Segmentation" not in result.stderr
