"""Quick mode, reused helpers, fonts, the installer's plan."""
import os
import subprocess
import sys

import pytest

import fr_lib
from fr_lib import utils
import fr_install


@pytest.mark.parametrize("value, expected", [
    ("0", False), ("false", False), ("OFF", False),
    ("1", True), ("true", True), ("Yes", True), ("on", True)])
def test_quick_mode_values(monkeypatch, value, expected):
    monkeypatch.setenv("FR_QUICK", value)
    assert utils.quick_mode() is expected
    assert utils.pick(20, 2) == (2 if expected else 20)


def test_quick_mode_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("FR_QUICK", "maybe")
    with pytest.raises(ValueError, match="FR_QUICK='maybe'"):
        utils.quick_mode()


def test_reused_helpers_come_from_d2l_and_gluoncv():
    from d2l import mxnet as d2l
    import gluoncv.utils
    assert utils.Timer is d2l.Timer and utils.Animator is d2l.Animator
    assert utils.export_block is gluoncv.utils.export_block
    assert fr_lib.train.LRScheduler is gluoncv.utils.LRScheduler
    with pytest.raises(AttributeError):
        utils.no_such_helper


def test_lazy_export_names_the_package_to_install():
    getter = utils.lazy_exports("fr_lib.x", {"Thing": ("no_such_pkg_xyz", "T", "xyz==1")})
    with pytest.raises(ImportError, match="pip install xyz==1"):
        getter("Thing")


def test_chinese_font_is_configured():
    import matplotlib
    family = utils.use_chinese_font()
    assert family is not None, "no CJK font installed (fonts-noto-cjk)"
    assert matplotlib.rcParams["font.sans-serif"][0] == family
    from matplotlib import font_manager
    path = font_manager.findfont(font_manager.FontProperties(family=family))
    font = matplotlib.ft2font.FT2Font(path)
    assert all(font.get_char_index(ord(c)) for c in "人脸识别损失函数")


@pytest.mark.parametrize("caps, wheel", [
    ([], "mxnet==1.9.1"), ([(7, 5)], "mxnet-cu117==1.9.1"),
    ([(8, 0), (8, 6)], "mxnet-cu117==1.9.1"), ([(9, 0)], "mxnet==1.9.1"),
    ([(3, 7)], "mxnet==1.9.1")])
def test_installer_picks_wheel_by_compute_capability(caps, wheel):
    commands, notes = fr_install.plan(caps, python_version=(3, 11))
    flat = [" ".join(c) for c in commands]
    assert any(wheel in c for c in flat), flat
    if wheel.startswith("mxnet-cu"):
        assert any("nvidia-cudnn-cu11" in c and "nvidia-nccl-cu11" in c for c in flat)
    if (9, 0) in caps:
        assert any("9.0 cannot run" in n for n in notes)


def test_installer_python_312_plan():
    commands, _ = fr_install.plan([], python_version=(3, 12), colab=True)
    flat = [" ".join(c) for c in commands]
    assert any("--no-deps d2l==1.0.3" in c for c in flat)
    assert any("numpy==1.26.4" in c and "setuptools" in c for c in flat)
    assert any("fonts-noto-cjk" in c for c in flat)


def test_installer_dry_run_cli():
    out = subprocess.run([sys.executable, "-m", "fr_install", "--dry-run",
                          "--gpu-cc", "9.0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "cannot run MXNet 1.9.1" in out.stdout
    assert "$ " in out.stdout and "mxnet==1.9.1" in out.stdout


def test_installer_and_compat_agree_on_numpy():
    # fr_install cannot import fr_lib (it runs before MXNet works), so it keeps
    # its own copy of the pin; the two must not drift apart.
    from fr_lib import _compat
    for version in [(3, 10), (3, 11), (3, 12), (3, 13)]:
        assert fr_install.numpy_pin(version) == "numpy==" + _compat.numpy_pin(version)
