"""fr_lib: face recognition with MXNet Gluon, the package behind the Gluon FR book.

Importing ``fr_lib`` first makes MXNet 1.9.1 importable on the running Python
(see :mod:`fr_lib._compat`), then exposes the subpackages:

- :mod:`fr_lib.loss` -- losses, ``get_loss`` / ``get_loss_list``
- :mod:`fr_lib.model_zoo` -- backbones, ``get_model`` / ``get_model_list``
- :mod:`fr_lib.data` -- data locations, alignment, datasets
- :mod:`fr_lib.metrics` -- similarity and verification metrics
- :mod:`fr_lib.train` -- multi-device training helpers
- :mod:`fr_lib.utils` -- devices, quick mode, plots, timers, widgets
- :mod:`fr_lib.ops` -- native CPU operators (PReLU, margin softmax), compiled
  on first use, with pure-MXNet fallbacks
"""
from ._version import __version__
from ._compat import CompatibilityError, import_mxnet

mx = import_mxnet()

from . import ops, utils, data, loss, model_zoo, metrics, train  # noqa: E402
from .loss import get_loss, get_loss_list  # noqa: E402
from .model_zoo import get_model, get_model_list  # noqa: E402

__all__ = ["__version__", "CompatibilityError", "ops", "utils", "data", "loss",
           "model_zoo", "metrics", "train", "get_loss", "get_loss_list",
           "get_model", "get_model_list"]
