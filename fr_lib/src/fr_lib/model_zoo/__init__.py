"""Backbones that map an image to an embedding, reachable by name.

>>> from fr_lib.model_zoo import get_model
>>> net = get_model('lenetpp', embedding_size=2)
"""
from ..utils.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register

from .lenet import LeNetPlusPlus, lenetpp  # noqa: E402
from .head import NormDense  # noqa: E402
from .layers import PReLU, SEBlock, make_prelu  # noqa: E402
from .mobilefacenet import MobileFaceNet, mobilefacenet, mobilefacenet_512  # noqa: E402
from .iresnet import (IResNet, IRBlock, EmbeddingHead, iresnet18, iresnet34,  # noqa: E402
                      iresnet50, iresnet100, iresnet200)
from .seresnet import se_lresnet18e, se_lresnet50e, se_lresnet101e  # noqa: E402
from .attention import AttentionNet, attention_net56, attention_net92  # noqa: E402
from .flops import count_params, count_flops, model_table, ModelRow  # noqa: E402
from .inference import (PreparedNetwork, mkldnn_available,  # noqa: E402
                        prepare_for_inference)
from .fused import FusedNetwork, fuse_network  # noqa: E402
from .native_train import NativeTrainingView, native_training_support  # noqa: E402
from .quicknet import QuickFaceNet, quickfacenet  # noqa: E402

__all__ = ["get_model", "get_model_list", "register_model", "MODELS",
           "LeNetPlusPlus", "lenetpp", "NormDense",
           "PReLU", "SEBlock", "make_prelu",
           "MobileFaceNet", "mobilefacenet", "mobilefacenet_512",
           "IResNet", "IRBlock", "EmbeddingHead", "iresnet18", "iresnet34",
           "iresnet50", "iresnet100", "iresnet200",
           "se_lresnet18e", "se_lresnet50e", "se_lresnet101e",
           "AttentionNet", "attention_net56", "attention_net92",
           "count_params", "count_flops", "model_table", "ModelRow",
           "prepare_for_inference", "PreparedNetwork", "mkldnn_available",
           "FusedNetwork", "fuse_network",
           "NativeTrainingView", "native_training_support",
           "QuickFaceNet", "quickfacenet"]


def get_model(name, pretrained=None, **kwargs):
    """Build the model registered as ``name`` (case-insensitive).

    Book: introduced in ``chapter_loss/center-ring`` (中心损失与环损失).

    ``pretrained='insightface:<file or name>'`` loads InsightFace's published
    weights (a ``backbone.pth`` or a model pack's ``.onnx``, see
    :mod:`fr_lib.model_zoo.pretrained`).

    Raises
    ------
    ValueError
        For an unknown name; the message lists :func:`get_model_list`.
    """
    net = MODELS.create(name, **kwargs)
    if pretrained:
        from .pretrained import load_pretrained
        net = load_pretrained(net, name, pretrained)
    return net


def get_model_list():
    """Names accepted by :func:`get_model`, sorted."""
    return MODELS.names()
