"""MobileFaceNet: a sub-million-parameter face backbone (arXiv 1804.07573).

Two registered configurations:

``mobilefacenet``
    The paper's network (Table 1), 128-d embedding: 1.00 M parameters
    (BN and PReLU included; the paper says 0.99 M) and 0.221 G
    multiply-adds at 112x112 (the paper: 221 M).
``mobilefacenet_512``
    InsightFace's ``mbf`` (``arcface_torch/backbones/mobilefacenet.py``,
    ``scale=2``, ``blocks=(1, 4, 6, 2)``): every width below the last 1x1
    convolution doubled, 512-d embedding; 2.06 M parameters and 0.44 G
    multiply-adds (InsightFace quotes it as 0.45 G).
"""
from mxnet.gluon import nn

from . import register_model
from .layers import BN_EPS, make_prelu

__all__ = ["MobileFaceNet", "mobilefacenet", "mobilefacenet_512",
           "MOBILEFACENET_SPECS"]

# Each stage is (expansion width, output channels, blocks, stride of the first
# block). Widths are absolute rather than expansion factors so the two
# configurations share one description: the paper's t=2 / t=4 on 64 or 128
# input channels gives 128, 256 and 512.
MOBILEFACENET_SPECS = {
    "mobilefacenet": dict(
        stem_channels=64, stem_groups=64,
        stages=[(128, 64, 5, 2), (256, 128, 1, 2), (256, 128, 6, 1),
                (512, 128, 1, 2), (256, 128, 2, 1)]),
    # InsightFace's mbf keeps its group/expansion widths fixed while doubling
    # the channels, so its second convolution has 64 groups of 2 channels
    # (not depthwise) and its bottlenecks expand by 1x, 1x and 2x.
    "mobilefacenet_512": dict(
        stem_channels=128, stem_groups=64,
        stages=[(128, 128, 1, 2), (128, 128, 4, 1), (256, 256, 1, 2),
                (256, 256, 6, 1), (512, 256, 1, 2), (256, 256, 2, 1)]),
}


class _ConvBN(nn.HybridBlock):
    """Convolution (no bias) + BatchNorm, followed by PReLU unless ``linear``."""

    def __init__(self, in_channels, channels, kernel, stride=1, pad=0, groups=1,
                 linear=False, fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(channels, kernel, stride, pad, groups=groups,
                                  use_bias=False, in_channels=in_channels)
            self.bn = nn.BatchNorm(epsilon=BN_EPS, in_channels=channels)
            self.act = None if linear else make_prelu(channels, fast_prelu)

    def hybrid_forward(self, F, x):
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


class _Bottleneck(nn.HybridBlock):
    """Inverted residual (MobileNetV2, arXiv 1801.04381) with PReLU:
    1x1 expand -> 3x3 depthwise (stride) -> linear 1x1 project, plus the
    input when stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels, width, channels, stride, fast_prelu=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.residual = stride == 1 and in_channels == channels
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(
                _ConvBN(in_channels, width, 1, fast_prelu=fast_prelu),
                _ConvBN(width, width, 3, stride, 1, groups=width,
                        fast_prelu=fast_prelu),
                _ConvBN(width, channels, 1, linear=True))

    def hybrid_forward(self, F, x):
        out = self.body(x)
        return out + x if self.residual else out


class MobileFaceNet(nn.HybridBlock):
    """MobileFaceNet backbone (Chen et al., arXiv 1804.07573).

    ``conv3x3 s2 -> grouped conv3x3 -> inverted-residual stages ->
    conv1x1 512 -> linear global depthwise conv 7x7 (GDConv) -> linear
    conv1x1 -> BatchNorm``. The GDConv replaces global average pooling so that each of
    the 7x7 positions of the last feature map gets its own learned weight
    (the paper's argument: corner and centre pixels of a face are not
    equally important). Input ``(N, 3, 112, 112)``, already normalised;
    output ``(N, embedding_size)``.

    Parameters
    ----------
    stages : list of (int, int, int, int)
        ``(expansion width, output channels, blocks, first stride)`` per stage.
    embedding_size : int, default 128
    stem_channels : int, default 64
    stem_groups : int, default 64
        Groups of the second 3x3 convolution (``stem_channels`` = depthwise).
    head_channels : int, default 512
        Channels of the last 1x1 convolution and of the GDConv.
    fast_prelu : bool, default True
        Use :class:`fr_lib.model_zoo.layers.PReLU` (same weights as
        ``nn.PReLU``, much faster backward on CPU).
    """

    def __init__(self, stages, embedding_size=128, stem_channels=64,
                 stem_groups=64, head_channels=512, fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        self.embedding_size = embedding_size
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(
                _ConvBN(3, stem_channels, 3, 2, 1, fast_prelu=fast_prelu),
                _ConvBN(stem_channels, stem_channels, 3, 1, 1, groups=stem_groups,
                        fast_prelu=fast_prelu))
            channels = stem_channels
            for width, out_channels, blocks, stride in stages:
                for i in range(blocks):
                    self.features.add(_Bottleneck(channels, width, out_channels,
                                                  stride if i == 0 else 1,
                                                  fast_prelu=fast_prelu))
                    channels = out_channels
            self.features.add(
                _ConvBN(channels, head_channels, 1, fast_prelu=fast_prelu),
                # GDConv: 7x7 depthwise, no padding -> 1x1, linear.
                _ConvBN(head_channels, head_channels, 7, groups=head_channels,
                        linear=True))
            # The paper's "linear conv1x1" on the 1x1 map, then BN (gamma fixed
            # at 1, as InsightFace's fc1). Kept 4-D on purpose: in MXNet 1.9
            # with MKLDNN, BN -> FC(512 -> 512) -> BN on 2-D arrays crashes
            # (segfault) at 512-d; the convolution form is the same layer.
            self.output = nn.HybridSequential(prefix="")
            self.output.add(
                nn.Conv2D(embedding_size, 1, use_bias=False, in_channels=head_channels),
                nn.BatchNorm(scale=False, epsilon=BN_EPS, in_channels=embedding_size),
                nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def _mobilefacenet(config, embedding_size, **kwargs):
    spec = dict(MOBILEFACENET_SPECS[config])
    spec.update(kwargs)
    return MobileFaceNet(embedding_size=embedding_size, **spec)


@register_model("mobilefacenet")
def mobilefacenet(embedding_size=128, fast_prelu=True, **kwargs):
    """MobileFaceNet as in the paper (Chen et al. 2018, "MobileFaceNets:
    Efficient CNNs for Accurate Real-Time Face Verification on Mobile
    Devices", arXiv 1804.07573, Table 1).

    With ``embedding_size=128``: 1.00 M parameters, 0.221 G multiply-adds.

    Parameters
    ----------
    embedding_size : int, default 128
    fast_prelu : bool, default True
        See :class:`MobileFaceNet`.
    """
    return _mobilefacenet("mobilefacenet", embedding_size,
                          fast_prelu=fast_prelu, **kwargs)


@register_model("mobilefacenet_512")
def mobilefacenet_512(embedding_size=512, fast_prelu=True, **kwargs):
    """InsightFace's ``mbf``: MobileFaceNet (arXiv 1804.07573) with doubled
    widths and a 512-d embedding, the light baseline of arcface_torch.

    2.06 M parameters and 0.44 G multiply-adds, twice the paper's network:
    the stem and the first stages run on twice the channels at 56x56 and
    28x28, where most of the work is.

    Parameters
    ----------
    embedding_size : int, default 512
    fast_prelu : bool, default True
        See :class:`MobileFaceNet`.
    """
    return _mobilefacenet("mobilefacenet_512", embedding_size,
                          fast_prelu=fast_prelu, **kwargs)
