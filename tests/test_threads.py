"""fr_lib.configure_threads: explicit, and effective whatever the import order."""
import os
import subprocess
import sys

import pytest

CODE = """
import os, sys
os.environ.pop("OMP_NUM_THREADS", None)
{first}
import fr_lib
n = fr_lib.configure_threads({arg})
from mxnet import base
import ctypes
print(n, os.environ["OMP_NUM_THREADS"])
"""


@pytest.mark.parametrize("first", ["", "import mxnet"])
def test_configure_threads_sets_variable_in_either_order(first):
    res = subprocess.run([sys.executable, "-W", "always", "-c",
                          CODE.format(first=first, arg="1")],
                         capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["1", "1"]
    # MXNet's engine threads read the number at load: loaded first, we say so
    if first or (os.cpu_count() or 1) > 1:
        assert "configure_threads(1)" in res.stderr and "before import mxnet" in res.stderr


def test_configure_threads_reaches_loaded_mxnet():
    code = ("import os; os.environ['OMP_NUM_THREADS'] = '2'\n"
            "import mxnet, ctypes, fr_lib\n"
            "libs = {l for l in open('/proc/self/maps').read().split() if 'libgomp.so' in l}\n"
            "g = [ctypes.CDLL(p) for p in sorted(libs) if p.startswith('/usr')]\n"
            "fr_lib.configure_threads(1)\n"
            "print(g[0].omp_get_max_threads() if g else 'skip')\n")
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                         capture_output=True, text=True, check=True)
    out = res.stdout.split()[-1]
    if out == "skip":
        pytest.skip("MXNet's libgomp is not the system one here")
    assert out == "1"


def test_configure_threads_rejects_bad_n():
    import fr_lib
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fr_lib.configure_threads(0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fr_lib.configure_threads("many")


def test_configure_threads_default_keeps_user_choice(monkeypatch):
    import fr_lib
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fr_lib.configure_threads() == 2
    assert os.environ["OMP_NUM_THREADS"] == "2"
