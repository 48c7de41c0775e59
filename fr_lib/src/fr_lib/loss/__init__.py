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

    Book: introduced in ``chapter_loss/center-ring`` (中心损失与环损失).

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
from . import margin, advanced, quality, metric, embedding, regularizer  # noqa: E402
from .margin import *  # noqa: E402,F401,F403
from .advanced import *  # noqa: E402,F401,F403
from .metric import *  # noqa: E402,F401,F403
from .regularizer import *  # noqa: E402,F401,F403

from .contract import LossContract, contract_of, DECLARATIONS as _DECLARATIONS  # noqa: E402

__all__ += margin.__all__ + advanced.__all__ + metric.__all__ + regularizer.__all__
__all__ += ["LossContract", "contract_of"]

# Every registered loss declares its contract (fr_lib.loss.contract); the classes
# of fr_lib carry it as the class attribute ``contract`` (gluon's softmax loss is
# not patched: contract_of('softmax') reads the table).
if set(_DECLARATIONS) != set(LOSSES.names()):  # pragma: no cover - a developer error
    raise RuntimeError(f"loss contracts and registry differ: "
                       f"{sorted(set(_DECLARATIONS) ^ set(LOSSES.names()))}")
for _name, _c in _DECLARATIONS.items():
    _cls = LOSSES.lookup(_name)
    if _cls.__module__.startswith(__name__):
        if "contract" in vars(_cls) and _cls.contract != _c:  # pragma: no cover
            raise RuntimeError(f"loss {_name!r}: two different contracts on {_cls.__name__}")
        _cls.contract = _c
