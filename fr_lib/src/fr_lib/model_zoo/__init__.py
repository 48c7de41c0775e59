"""Backbones that map an image to an embedding, reachable by name.

>>> from fr_lib.model_zoo import get_model
>>> net = get_model('lenetpp', embedding_size=2)
"""
from ..utils.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register

from .lenet import LeNetPlusPlus, lenetpp  # noqa: E402
from .head import NormDense  # noqa: E402

__all__ = ["get_model", "get_model_list", "register_model", "MODELS",
           "LeNetPlusPlus", "lenetpp", "NormDense"]


def get_model(name, **kwargs):
    """Build the model registered as ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        For an unknown name; the message lists :func:`get_model_list`.
    """
    return MODELS.create(name, **kwargs)


def get_model_list():
    """Names accepted by :func:`get_model`, sorted."""
    return MODELS.names()
