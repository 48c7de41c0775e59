"""Training helpers.

Reused rather than rewritten (imported on first use):

==================  ============================================================
``LRScheduler``     ``gluoncv.utils.LRScheduler`` (warm-up, step, cosine, poly)
``LRSequential``    ``gluoncv.utils.LRSequential`` (chain schedules)
``split_and_load``  ``mxnet.gluon.utils.split_and_load``
==================  ============================================================
"""
from mxnet.gluon.utils import split_and_load

from ..utils.lazy import lazy_exports
from . import features
from .features import *  # noqa: F401,F403
# launch is imported on use (``from fr_lib.train import launch``): importing it
# here made ``python -m fr_lib.train.launch`` warn and run a second copy
from . import schedule, checkpoint, trainer, partial_fc, callbacks
from .schedule import *  # noqa: F401,F403
from .checkpoint import *  # noqa: F401,F403
from .trainer import *  # noqa: F401,F403
from .callbacks import *  # noqa: F401,F403
from .partial_fc import PartialFC, PartialFCSample  # noqa: F401

__getattr__ = lazy_exports(__name__, {
    "LRScheduler": ("gluoncv.utils", "LRScheduler", "gluoncv==0.10.5.post0"),
    "LRSequential": ("gluoncv.utils", "LRSequential", "gluoncv==0.10.5.post0"),
})

__all__ = ["split_and_load", "LRScheduler", "LRSequential"] + features.__all__
__all__ += schedule.__all__ + checkpoint.__all__ + trainer.__all__ + partial_fc.__all__
__all__ += callbacks.__all__
from .quick import QuickModel, quick_face_model  # noqa: F401,E402
