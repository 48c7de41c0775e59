"""Utilities: devices, quick mode, plots, timers, widgets.

Reused rather than rewritten (imported on first use):

=====================  ==========================================
``Timer``              ``d2l.mxnet.Timer`` (d2l 1.0.3)
``Animator``           ``d2l.mxnet.Animator`` (d2l 1.0.3)
``Accumulator``        ``d2l.mxnet.Accumulator`` (d2l 1.0.3)
``export_block``       ``gluoncv.utils.export_block`` (GluonCV 0.10.5)
``split_and_load``     ``mxnet.gluon.utils.split_and_load`` (MXNet 1.9.1)
=====================  ==========================================
"""
from mxnet.gluon.utils import split_and_load

from .device import (list_gpus, get_devices, describe_devices, default_devices,
                     as_devices, has_gpu)
from .lazy import lazy_exports
from .plot import use_chinese_font, find_cjk_font_files
from .quick import quick_mode, pick, QUICK_ENV
from .glue import glue
from .registry import Registry
from .widgets import require_ipywidgets, slider
from . import vis
from .vis import *  # noqa: F401,F403

__getattr__ = lazy_exports(__name__, {
    "Timer": ("d2l.mxnet", "Timer", "d2l==1.0.3"),
    "Animator": ("d2l.mxnet", "Animator", "d2l==1.0.3"),
    "Accumulator": ("d2l.mxnet", "Accumulator", "d2l==1.0.3"),
    "export_block": ("gluoncv.utils", "export_block", "gluoncv==0.10.5.post0"),
})

__all__ = ["list_gpus", "get_devices", "describe_devices", "default_devices",
           "as_devices", "has_gpu", "split_and_load",
           "use_chinese_font", "find_cjk_font_files", "quick_mode", "pick",
           "QUICK_ENV", "glue", "Registry", "require_ipywidgets", "slider",
           "Timer", "Animator", "Accumulator", "export_block"] + vis.__all__
