"""QuickFaceNet: a small residual CNN for 112x112 faces that trains in a minute on a CPU.

The book's quick mode and CI train it on synthetic identities
(:mod:`fr_lib.train.quick`, the ``quick-synthetic`` recipe); it takes the same
input as the real backbones, so every evaluation and export tool works on it.
"""
from mxnet.gluon import nn

from . import register_model
from .iresnet import EmbeddingHead
from .layers import BN_EPS

__all__ = ["QuickFaceNet", "quickfacenet"]


class QuickFaceNet(nn.HybridBlock):
    """A small residual CNN for 112x112 faces that trains fast on a CPU.

    Book: introduced in ``chapter_evaluation/verification-protocol`` (验证、辨识与十折协议).

    ``avg-pool 2x2 (112 -> 56) -> 3 stages (conv3x3 s2 + residual conv3x3,
    56 -> 28 -> 14 -> 7) -> E head (BN, FC on the 7x7 map, BN)``. It takes
    the standard input, ``(N, 3, 112, 112)`` in fr_lib's pixel convention,
    so every tool that evaluates or exports the real backbones works on it
    unchanged. ReLU rather than PReLU: on 2 CPU cores a training step with
    fr_lib's fast PReLU took 2.7x as long, for no gain on synthetic faces.

    Parameters
    ----------
    width : tuple of int
        Channels of the three stages.
    embedding_size : int
    pool : int
        Side of the average pooling that downsamples the input first.
    """

    def __init__(self, width=(16, 32, 64), embedding_size=64, pool=2, **kwargs):
        super().__init__(**kwargs)
        if len(width) != 3:
            raise ValueError(f"width must list 3 stages, got {width}")
        if 112 // pool // 8 * pool * 8 != 112:
            raise ValueError(f"pool must divide 112 into a multiple of 8, got {pool}")
        self.embedding_size = int(embedding_size)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.AvgPool2D(pool))
            c_in = 3
            for c in width:
                self.features.add(_Stage(c_in, c, BN_EPS))
                c_in = c
            self.output = EmbeddingHead(c_in, embedding_size,
                                        spatial=112 // pool // 8)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class _Stage(nn.HybridBlock):
    """conv3x3 stride 2 + BN + ReLU, then a residual conv3x3 + BN, ReLU."""

    def __init__(self, in_channels, channels, bn_eps, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.down = nn.HybridSequential(prefix="down_")
            self.down.add(nn.Conv2D(channels, 3, 2, 1, use_bias=False,
                                    in_channels=in_channels),
                          nn.BatchNorm(epsilon=bn_eps, in_channels=channels),
                          nn.Activation("relu"))
            # gamma starts at 0: the residual branch begins as the identity
            self.res = nn.HybridSequential(prefix="res_")
            self.res.add(nn.Conv2D(channels, 3, 1, 1, use_bias=False,
                                   in_channels=channels),
                         nn.BatchNorm(epsilon=bn_eps, in_channels=channels,
                                      gamma_initializer="zeros"))

    def hybrid_forward(self, F, x):
        x = self.down(x)
        return F.relu(x + self.res(x))


@register_model("quickfacenet")
def quickfacenet(embedding_size=64, width=(16, 32, 64), pool=2, **kwargs):
    """:class:`~fr_lib.model_zoo.quicknet.QuickFaceNet`, registered as ``'quickfacenet'``.

    Parameters
    ----------
    embedding_size : int
    width : tuple of int
        Channels of the three stages.
    pool : int
        Side of the average pooling that downsamples the input first.
    **kwargs
        Passed to :class:`~fr_lib.model_zoo.quicknet.QuickFaceNet`.
    """
    return QuickFaceNet(width=tuple(width), embedding_size=embedding_size, pool=pool,
                        **kwargs)
