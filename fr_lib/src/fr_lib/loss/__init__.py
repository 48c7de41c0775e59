"""Losses for face recognition, reachable by name.

>>> from fr_lib.loss import get_loss, get_loss_list
>>> loss = get_loss('softmax')
"""
from mxnet import gluon

from ..utils.registry import Registry

__all__ = ["get_loss", "get_loss_list", "register_loss", "LOSSES"]

LOSSES = Registry("loss")
register_loss = LOSSES.register

# The baseline every margin loss is compared with: plain softmax cross-entropy
# over logits (gluon.loss.SoftmaxCrossEntropyLoss, reused as it is).
LOSSES.add("softmax", gluon.loss.SoftmaxCrossEntropyLoss)


def get_loss(name, **kwargs):
    """Build the loss registered as ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        For an unknown name; the message lists :func:`get_loss_list`.
    """
    return LOSSES.create(name, **kwargs)


def get_loss_list():
    """Names accepted by :func:`get_loss`, sorted."""
    return LOSSES.names()


# Imported last: the modules register their losses through register_loss above.
from . import margin, advanced, metric, regularizer  # noqa: E402
from .margin import *  # noqa: E402,F401,F403
from .advanced import *  # noqa: E402,F401,F403
from .metric import *  # noqa: E402,F401,F403
from .regularizer import *  # noqa: E402,F401,F403

__all__ += margin.__all__ + advanced.__all__ + metric.__all__ + regularizer.__all__
