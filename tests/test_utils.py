"""Quick mode, reused helpers, fonts, the installer's plan."""
import os
import subprocess
import sys

import pytest

import fr_lib
from fr_lib import utils


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
