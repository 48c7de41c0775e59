"""The compatibility layer: NumPy checks, distutils, clear errors."""
import os
import subprocess
import sys
import textwrap
import types

import pytest

from fr_lib import _compat
from fr_lib._compat import CompatibilityError


def fake_numpy(version, has_bool):
    np = types.ModuleType("numpy")
    np.__version__ = version
    np.__file__ = "/somewhere/numpy/__init__.py"
    np.bool_ = bool
    if has_bool:
        np.bool = bool
    return np


def test_numpy_pin_per_python():
    assert _compat.numpy_pin((3, 10)) == "1.23.5"
    assert _compat.numpy_pin((3, 11)) == "1.23.5"
    assert _compat.numpy_pin((3, 12)) == "1.26.4"
    assert _compat.numpy_pin((3, 13)) == "1.26.4"


@pytest.mark.parametrize("version", ["2.0.0", "2.1.3", "2.5.5", "3.0.0rc1"])
def test_numpy2_is_refused_with_pip_command(version):
    with pytest.raises(CompatibilityError) as info:
        _compat.check_numpy(fake_numpy(version, has_bool=True))
    message = str(info.value)
    assert f"NumPy {version}" in message
    assert f"pip install numpy=={_compat.numpy_pin()}" in message


def test_bool_alias_added_for_numpy_1_24_and_later():
    np = fake_numpy("1.26.4", has_bool=False)
    assert "bool" not in np.__dict__
    _compat.check_numpy(np)
    assert np.bool is np.bool_


def test_old_numpy_left_alone():
    np = fake_numpy("1.23.5", has_bool=False)
    _compat.check_numpy(np)
    assert "bool" not in np.__dict__


def test_version_parsing():
    assert _compat._version_tuple("1.26.4") == (1, 26, 4)
    assert _compat._version_tuple("2.0.0rc1") == (2, 0, 0)
    assert _compat._version_tuple("1.24.dev0") == (1, 24, 0)


def run_python(code):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_missing_mxnet_gives_pip_command():
    # Make mxnet invisible in a fresh interpreter; test_python_versions.py
    # checks the same in a real venv without mxnet.
    result = run_python("""
        import importlib.util
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, package=None: (
            None if name == "mxnet" else _find(name, package))
        import fr_lib
    """)
    assert result.returncode != 0
    assert "fr_lib needs MXNet 1.9.1, which is not installed" in result.stderr
    assert "pip install mxnet==1.9.1" in result.stderr


def test_import_works_and_mxnet_computes():
    result = run_python("""
        import fr_lib, mxnet as mx
        print(fr_lib.__version__, (mx.nd.ones((2, 3)) * 2).sum().asscalar())
    """)
    assert result.returncode == 0, result.stderr
    version, total = result.stdout.split()
    assert version == fr_lib_version()
    assert float(total) == 12.0


def fr_lib_version():
    import fr_lib
    return fr_lib.__version__


def test_default_threads_one_per_core_unless_set():
    import subprocess
    import sys
    code = "import os, fr_lib; print(os.environ['OMP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    assert out == str(len(os.sched_getaffinity(0)))
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    assert out == "1"
    from fr_lib._compat import set_default_threads
    fake = {}
    assert set_default_threads(fake) == fake["OMP_NUM_THREADS"]
    assert set_default_threads({"OMP_NUM_THREADS": "3"}) == "3"
