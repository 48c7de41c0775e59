"""IResNet: ArcFace's residual networks for 112x112 faces (arXiv 1801.07698).

InsightFace's ``LResNet{N}E-IR`` (``fresnet.py`` in the MXNet code,
``iresnet.py`` in arcface_torch): "L" -- a 3x3 stride-1 input convolution so
that four stride-2 stages end at 7x7; "IR" -- the improved residual unit
BN-conv3x3-BN-PReLU-conv3x3(stride)-BN; "E" -- the embedding head
BN-Dropout-Flatten-FC-BN on the 7x7 map instead of global pooling.

===========  ===============  ==========  =============
name         units per stage  parameters  multiply-adds
===========  ===============  ==========  =============
iresnet18    2, 2, 2, 2         24.0 M       2.61 G
iresnet34    3, 4, 6, 3         34.1 M       4.46 G
iresnet50    3, 4, 14, 3        43.6 M       6.31 G
iresnet100   3, 13, 30, 3       65.2 M      12.09 G
iresnet200   6, 26, 60, 6      118.8 M      23.42 G
===========  ===============  ==========  =============

(512-d embedding; counted by :func:`fr_lib.model_zoo.count_flops`.)
"""
from mxnet.gluon import nn

from . import register_model
from .layers import BN_EPS, SEBlock, make_prelu

__all__ = ["IResNet", "IRBlock", "EmbeddingHead", "IRESNET_UNITS",
           "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200"]

IRESNET_UNITS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3],
                 100: [3, 13, 30, 3], 200: [6, 26, 60, 6]}
STAGE_CHANNELS = [64, 128, 256, 512]


class IRBlock(nn.HybridBlock):
    """Improved residual unit (ArcFace, arXiv 1801.07698, Fig. 7):
    ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN [-> SE] + shortcut``.

    Book: introduced in ``chapter_backbone/iresnet`` (从 ResNet 到 IResNet).

    The stride sits in the second convolution, and there is no activation
    after the addition. The shortcut is a strided 1x1 convolution + BN when
    the shape changes.

    Parameters
    ----------
    in_channels, channels : int
    stride : int
    use_se : bool, default False
        Squeeze-and-excitation gate on the residual branch (SE-LResNet).
    zero_init_residual : bool, default True
        Start the last BN's gamma at 0, so each unit begins as its shortcut
        (Goyal et al., arXiv 1706.02677). Besides helping deep nets train, it
        keeps an untrained network's inference output finite: with BN's
        running statistics at (0, 1), a hundred residual branches would
        otherwise multiply the signal past float32's range.
    fast_prelu : bool, default True
    """

    def __init__(self, in_channels, channels, stride, use_se=False,
                 zero_init_residual=True, fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        last_gamma = "zeros" if zero_init_residual else "ones"
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(
                nn.BatchNorm(epsilon=BN_EPS, in_channels=in_channels),
                nn.Conv2D(channels, 3, 1, 1, use_bias=False, in_channels=in_channels),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=channels),
                make_prelu(channels, fast_prelu),
                nn.Conv2D(channels, 3, stride, 1, use_bias=False, in_channels=channels),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=channels,
                             gamma_initializer=last_gamma))
            if use_se:
                self.body.add(SEBlock(channels, fast_prelu=fast_prelu))
            if stride != 1 or in_channels != channels:
                self.shortcut = nn.HybridSequential(prefix="sc_")
                self.shortcut.add(
                    nn.Conv2D(channels, 1, stride, use_bias=False, in_channels=in_channels),
                    nn.BatchNorm(epsilon=BN_EPS, in_channels=channels))
            else:
                self.shortcut = None

    def hybrid_forward(self, F, x):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.body(x) + shortcut


class EmbeddingHead(nn.HybridBlock):
    """InsightFace's output "E": ``BN -> Dropout -> Flatten -> FC -> BN``.

    Book: introduced in ``chapter_backbone/iresnet`` (从 ResNet 到 IResNet).

    The FC sees the whole ``C x 7 x 7`` map, so it keeps where on the face a
    feature was found (most of a ResNet's parameters live here:
    512 x 7 x 7 x 512 = 12.8 M). The last BN has gamma fixed at 1.

    Parameters
    ----------
    in_channels : int
    embedding_size : int
    spatial : int, default 7
        Side of the input feature map.
    dropout : float, default 0
        InsightFace used 0.4 on MS1M; 0 for large, clean datasets.
    """

    def __init__(self, in_channels, embedding_size, spatial=7, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        with self.name_scope():
            self.bn = nn.BatchNorm(epsilon=BN_EPS, in_channels=in_channels)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Dense(embedding_size, in_units=in_channels * spatial * spatial)
            self.features = nn.BatchNorm(scale=False, epsilon=BN_EPS,
                                         in_channels=embedding_size)

    def hybrid_forward(self, F, x):
        x = self.fc(F.flatten(self.dropout(self.bn(x))))
        # BN on (N, E, 1, 1) rather than (N, E): MXNet 1.9's MKLDNN BatchNorm
        # on 2-D arrays can segfault once 4-D BNs of the same width have run
        # (seen with MobileFaceNet and IResNet in one process).
        return F.flatten(self.features(F.reshape(x, shape=(0, 0, 1, 1))))


class IResNet(nn.HybridBlock):
    """ResNet for 112x112 faces with IR units and the E head (ArcFace,
    arXiv 1801.07698).

    ``conv3x3 64 s1 -> BN -> PReLU -> 4 stages (64, 128, 256, 512 channels,
    each starting with stride 2: 112 -> 56 -> 28 -> 14 -> 7) -> E head``.
    Input ``(N, 3, 112, 112)``, already normalised; output
    ``(N, embedding_size)``.

    Parameters
    ----------
    units : list of int
        IR units in each of the four stages.
    embedding_size : int, default 512
    dropout : float, default 0
        Dropout before the FC of the head.
    use_se : bool, default False
        Add SE gates to every unit (SE-LResNet, see :mod:`.seresnet`).
    zero_init_residual : bool, default True
        See :class:`IRBlock`.
    fast_prelu : bool, default True
        Use :class:`fr_lib.model_zoo.layers.PReLU`.
    """

    def __init__(self, units, embedding_size=512, dropout=0.0, use_se=False,
                 zero_init_residual=True, fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        if len(units) != len(STAGE_CHANNELS):
            raise ValueError(f"units must list 4 stages, got {units}")
        self.embedding_size = embedding_size
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(
                nn.Conv2D(64, 3, 1, 1, use_bias=False, in_channels=3),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=64),
                make_prelu(64, fast_prelu))
            in_channels = 64
            for stage, (n, channels) in enumerate(zip(units, STAGE_CHANNELS)):
                layer = nn.HybridSequential(prefix=f"stage{stage + 1}_")
                with layer.name_scope():
                    for i in range(n):
                        layer.add(IRBlock(in_channels, channels, 2 if i == 0 else 1,
                                          use_se=use_se,
                                          zero_init_residual=zero_init_residual,
                                          fast_prelu=fast_prelu))
                        in_channels = channels
                self.features.add(layer)
            self.output = EmbeddingHead(in_channels, embedding_size, dropout=dropout)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def _iresnet(depth, embedding_size, **kwargs):
    return IResNet(IRESNET_UNITS[depth], embedding_size=embedding_size, **kwargs)


@register_model("iresnet18")
def iresnet18(embedding_size=512, **kwargs):
    """IResNet-18 (LResNet18E-IR): units [2, 2, 2, 2] (Deng et al. 2019,
    "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    arXiv 1801.07698).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        ``dropout``, ``zero_init_residual``, ``fast_prelu``: see :class:`IResNet`.
    """
    return _iresnet(18, embedding_size, **kwargs)


@register_model("iresnet34")
def iresnet34(embedding_size=512, **kwargs):
    """IResNet-34 (LResNet34E-IR): units [3, 4, 6, 3] (ArcFace, arXiv 1801.07698).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`IResNet`.
    """
    return _iresnet(34, embedding_size, **kwargs)


@register_model("iresnet50")
def iresnet50(embedding_size=512, **kwargs):
    """IResNet-50 (LResNet50E-IR): units [3, 4, 14, 3] (ArcFace, arXiv 1801.07698).

    43.6 M parameters, 6.3 G multiply-adds with a 512-d embedding.

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`IResNet`.
    """
    return _iresnet(50, embedding_size, **kwargs)


@register_model("iresnet100")
def iresnet100(embedding_size=512, **kwargs):
    """IResNet-100 (LResNet100E-IR): units [3, 13, 30, 3] (ArcFace,
    arXiv 1801.07698).

    65.2 M parameters, 12.1 G multiply-adds with a 512-d embedding.

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`IResNet`.
    """
    return _iresnet(100, embedding_size, **kwargs)


@register_model("iresnet200")
def iresnet200(embedding_size=512, **kwargs):
    """IResNet-200: units [6, 26, 60, 6], arcface_torch's largest IResNet
    (ArcFace, arXiv 1801.07698).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`IResNet`.
    """
    return _iresnet(200, embedding_size, **kwargs)
