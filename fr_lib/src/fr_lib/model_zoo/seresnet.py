"""SE-LResNet: IResNet with squeeze-and-excitation gates (arXiv 1801.07698).

What exactly is built
---------------------
``SE-LResNet{N}E-IR`` of the ArcFace paper, i.e. InsightFace's MXNet
``fresnet`` with ``net_se=1``, ``net_input=1`` ("L"), ``net_unit=3`` ("IR")
and ``net_output='E'``:

- stem ``conv3x3 64 s1 -> BN -> PReLU`` at 112x112;
- four stages of 64, 128, 256, 512 channels, each starting with stride 2;
- every unit is the IR unit ``BN -> conv3x3 -> BN -> PReLU ->
  conv3x3(stride) -> BN`` whose output is rescaled per channel by an SE gate
  ``sigmoid(conv1x1(C -> C/16) -> PReLU -> conv1x1(C/16 -> C))`` computed
  from its global average (both 1x1 convolutions with bias) before it is
  added to the shortcut;
- head "E": ``BN -> Dropout -> Flatten -> FC(512*7*7 -> E) -> BN``.

Units per stage follow ``fresnet``: 18 -> [2, 2, 2, 2],
50 -> [3, 4, 14, 3], 101 -> [3, 4, 23, 3] (the ResNet-101 unit counts of
He et al.; note that ``iresnet100`` is the deeper [3, 13, 30, 3]).

gluon-face (2018) shipped a family under the same name built differently:
pre-activation *bottleneck* units (ResNet v2) with SE, a max-pooling stem and
global average pooling before the FC. We follow the ArcFace/InsightFace
definition, which is what the ArcFace paper's SE-LResNet50E-IR results refer
to; :mod:`.attention` shows pre-activation bottlenecks.

Each SE gate on ``C`` channels adds ``2 * C * (C // 16) + C // 16 + C``
weights and biases plus ``C // 16`` PReLU slopes: 33,344 for ``C = 512``.
"""
from . import register_model
from .iresnet import IResNet

__all__ = ["SE_LRESNET_UNITS", "se_lresnet18e", "se_lresnet50e", "se_lresnet101e"]

SE_LRESNET_UNITS = {18: [2, 2, 2, 2], 50: [3, 4, 14, 3], 101: [3, 4, 23, 3]}


def _se_lresnet(depth, embedding_size, **kwargs):
    return IResNet(SE_LRESNET_UNITS[depth], embedding_size=embedding_size,
                   use_se=True, **kwargs)


@register_model("se_lresnet18e")
def se_lresnet18e(embedding_size=512, **kwargs):
    """SE-LResNet18E-IR: IR units [2, 2, 2, 2] with SE gates, E head
    (ArcFace, Deng et al., arXiv 1801.07698; SE: Hu et al., arXiv 1709.01507).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        ``dropout``, ``zero_init_residual``, ``fast_prelu``: see
        :class:`fr_lib.model_zoo.IResNet`.
    """
    return _se_lresnet(18, embedding_size, **kwargs)


@register_model("se_lresnet50e")
def se_lresnet50e(embedding_size=512, **kwargs):
    """SE-LResNet50E-IR: IR units [3, 4, 14, 3] with SE gates, E head
    (ArcFace, arXiv 1801.07698; SE: arXiv 1709.01507).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`fr_lib.model_zoo.IResNet`.
    """
    return _se_lresnet(50, embedding_size, **kwargs)


@register_model("se_lresnet101e")
def se_lresnet101e(embedding_size=512, **kwargs):
    """SE-LResNet101E-IR: IR units [3, 4, 23, 3] with SE gates, E head
    (ArcFace, arXiv 1801.07698; SE: arXiv 1709.01507).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`fr_lib.model_zoo.IResNet`.
    """
    return _se_lresnet(101, embedding_size, **kwargs)
