"""Residual Attention Network for 112x112 faces (arXiv 1704.06904).

Attention modules multiply a trunk branch by ``1 + M(x)``, where the soft
mask ``M`` comes from a bottom-up / top-down branch: max pooling shrinks the
map to 7x7 to see the whole face, bilinear upsampling brings it back, skip
connections carry the intermediate scales, and a sigmoid bounds it to
(0, 1). "Attention residual learning" (the ``1 +``) keeps the trunk's
features when the mask is near 0, so the modules can be stacked deep.

Face variant (as gluon-face's ``AttentionNetFace`` did): the ImageNet stem
``conv7x7 s2 + maxpool`` becomes ``conv3x3 s1`` at 112x112 and the first
residual unit has stride 2, so the attention stages still run at 56, 28 and
14 and the last stage at 7x7 exactly as in the paper at 224x224. The head is
InsightFace's "E" after a 1x1 reduction 2048 -> 512 (+BN+PReLU), as
InsightFace's ``fresnet`` does for its bottleneck networks: without it the
FC would take 2048x7x7 inputs (51 M weights for a 512-d embedding).
"""
from mxnet.gluon import nn

from . import register_model
from .iresnet import EmbeddingHead
from .layers import BN_EPS, make_prelu

__all__ = ["AttentionNet", "AttentionModule", "PreActBottleneck",
           "ATTENTION_SPECS", "attention_net56", "attention_net92"]

# Attention modules per stage (paper Sec. 4.1: depth = 36 m + 20 with
# p, t, r = 1, 2, 1): Attention-56 -> 1, 1, 1; Attention-92 -> 1, 2, 3.
ATTENTION_SPECS = {56: [1, 1, 1], 92: [1, 2, 3]}
STAGE_CHANNELS = [256, 512, 1024, 2048]


class PreActBottleneck(nn.HybridBlock):
    """Pre-activation bottleneck (He et al., arXiv 1603.05027), the paper's
    residual unit: ``BN -> PReLU -> conv1x1(C/4) -> BN -> PReLU ->
    conv3x3(C/4, stride) -> BN -> PReLU -> conv1x1(C)`` plus the input, or
    plus a strided 1x1 convolution of the pre-activated input when the shape
    changes.

    Parameters
    ----------
    in_channels, channels : int
    stride : int, default 1
    zero_init_residual : bool, default True
        Start the last convolution at zero so the unit begins as the
        identity; with no BN after it, this is what keeps a deep untrained
        net's output in range.
    fast_prelu : bool, default True
    """

    def __init__(self, in_channels, channels, stride=1, zero_init_residual=True,
                 fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        mid = channels // 4
        with self.name_scope():
            self.pre = nn.HybridSequential(prefix="")
            self.pre.add(nn.BatchNorm(epsilon=BN_EPS, in_channels=in_channels),
                         make_prelu(in_channels, fast_prelu))
            self.body = nn.HybridSequential(prefix="")
            self.body.add(
                nn.Conv2D(mid, 1, use_bias=False, in_channels=in_channels),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=mid),
                make_prelu(mid, fast_prelu),
                nn.Conv2D(mid, 3, stride, 1, use_bias=False, in_channels=mid),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=mid),
                make_prelu(mid, fast_prelu),
                nn.Conv2D(channels, 1, use_bias=False, in_channels=mid,
                          weight_initializer="zeros" if zero_init_residual else None))
            self.shortcut = None
            if stride != 1 or in_channels != channels:
                self.shortcut = nn.Conv2D(channels, 1, stride, use_bias=False,
                                          in_channels=in_channels)

    def hybrid_forward(self, F, x):
        act = self.pre(x)
        shortcut = x if self.shortcut is None else self.shortcut(act)
        return self.body(act) + shortcut


def _units(n, channels, prefix, **kwargs):
    seq = nn.HybridSequential(prefix=prefix)
    with seq.name_scope():
        for _ in range(n):
            seq.add(PreActBottleneck(channels, channels, **kwargs))
    return seq


class _SoftMask(nn.HybridBlock):
    """Bottom-up / top-down mask branch with ``pools`` max-pool levels.

    Down: ``pools`` times max pool 3x3 s2 + ``r`` units, a skip unit taken
    at every level but the lowest; bottom: ``r`` more units; up: bilinear
    upsampling to the next level's size, add its skip, ``r`` units; last
    upsampling to the input size, then ``BN-PReLU-conv1x1-BN-PReLU-conv1x1``
    and a sigmoid.
    """

    def __init__(self, channels, pools, r=1, fast_prelu=True,
                 zero_init_residual=True, **kwargs):
        super().__init__(**kwargs)
        self._pools = pools
        unit_kw = dict(fast_prelu=fast_prelu, zero_init_residual=zero_init_residual)
        with self.name_scope():
            self.down = nn.HybridSequential(prefix="down_")
            self.skip = nn.HybridSequential(prefix="skip_")
            self.up = nn.HybridSequential(prefix="up_")
            with self.down.name_scope():
                for level in range(pools):
                    self.down.add(_units(r, channels, f"{level}_", **unit_kw))
            with self.skip.name_scope():
                for level in range(pools - 1):
                    self.skip.add(PreActBottleneck(channels, channels, **unit_kw))
            with self.up.name_scope():
                for level in range(pools - 1):
                    self.up.add(_units(r, channels, f"{level}_", **unit_kw))
            self.bottom = _units(r, channels, "bottom_", **unit_kw)
            self.head = nn.HybridSequential(prefix="head_")
            with self.head.name_scope():
                for _ in range(2):
                    self.head.add(nn.BatchNorm(epsilon=BN_EPS, in_channels=channels),
                                  make_prelu(channels, fast_prelu),
                                  nn.Conv2D(channels, 1, use_bias=False,
                                            in_channels=channels))

    def hybrid_forward(self, F, x):
        levels, skips = [], []
        h = x
        for level in range(self._pools):
            h = F.Pooling(h, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
            h = self.down[level](h)
            if level < self._pools - 1:
                levels.append(h)
                skips.append(self.skip[level](h))
        h = self.bottom(h)
        for level in reversed(range(self._pools - 1)):
            # 'like' mode reads the target size from the graph, so any input
            # size that survives the pooling works.
            h = F.contrib.BilinearResize2D(h, levels[level], mode="like") + skips[level]
            h = self.up[level](h)
        h = F.contrib.BilinearResize2D(h, x, mode="like")
        return F.sigmoid(self.head(h))


class AttentionModule(nn.HybridBlock):
    """``post((1 + mask(u)) * trunk(u))`` with ``u = pre(x)`` (paper Eq. 3).

    Book: introduced in ``chapter_backbone/se-attention`` (SE 与注意力变体).

    Parameters
    ----------
    channels : int
    pools : int
        Max-pool levels of the mask branch (3 at 56x56, 2 at 28, 1 at 14,
        so every mask reaches 7x7).
    p, t, r : int, default 1, 2, 1
        Units before and after the module, in the trunk, and between
        poolings in the mask (the paper's hyper-parameters).
    """

    def __init__(self, channels, pools, p=1, t=2, r=1, fast_prelu=True,
                 zero_init_residual=True, **kwargs):
        super().__init__(**kwargs)
        unit_kw = dict(fast_prelu=fast_prelu, zero_init_residual=zero_init_residual)
        with self.name_scope():
            self.pre = _units(p, channels, "pre_", **unit_kw)
            self.trunk = _units(t, channels, "trunk_", **unit_kw)
            self.mask = _SoftMask(channels, pools, r, prefix="mask_", **unit_kw)
            self.post = _units(p, channels, "post_", **unit_kw)

    def hybrid_forward(self, F, x):
        x = self.pre(x)
        trunk = self.trunk(x)
        return self.post(trunk + self.mask(x) * trunk)


class AttentionNet(nn.HybridBlock):
    """Residual Attention Network for 112x112 faces (Wang et al.,
    arXiv 1704.06904), see the module docstring for the face adaptations.

    ``conv3x3 64 s1 -> unit 256 s2 -> m1 modules (56x56) -> unit 512 s2 ->
    m2 modules (28x28) -> unit 1024 s2 -> m3 modules (14x14) -> 3 units 2048
    (first s2, 7x7) -> BN -> PReLU -> conv1x1 512 -> BN -> PReLU -> E head``.

    Parameters
    ----------
    modules : list of 3 int
        Attention modules per stage.
    embedding_size : int, default 512
    p, t, r : int, default 1, 2, 1
    reduce_channels : int, default 512
        Output of the 1x1 reduction before the head (0: none).
    dropout : float, default 0
    zero_init_residual : bool, default True
    fast_prelu : bool, default True
    """

    def __init__(self, modules, embedding_size=512, p=1, t=2, r=1,
                 reduce_channels=512, dropout=0.0, zero_init_residual=True,
                 fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        if len(modules) != 3:
            raise ValueError(f"modules must list 3 stages, got {modules}")
        self.embedding_size = embedding_size
        unit_kw = dict(fast_prelu=fast_prelu, zero_init_residual=zero_init_residual)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(
                nn.Conv2D(64, 3, 1, 1, use_bias=False, in_channels=3),
                nn.BatchNorm(epsilon=BN_EPS, in_channels=64),
                make_prelu(64, fast_prelu))
            in_channels = 64
            for stage, channels in enumerate(STAGE_CHANNELS):
                self.features.add(PreActBottleneck(in_channels, channels, 2, **unit_kw))
                in_channels = channels
                if stage < 3:
                    for _ in range(modules[stage]):
                        self.features.add(AttentionModule(channels, 3 - stage, p, t, r,
                                                          **unit_kw))
                else:
                    for _ in range(2):
                        self.features.add(PreActBottleneck(channels, channels, **unit_kw))
            # Pre-activation units end without BN/activation: add them once.
            self.features.add(nn.BatchNorm(epsilon=BN_EPS, in_channels=in_channels),
                              make_prelu(in_channels, fast_prelu))
            if reduce_channels:
                self.features.add(
                    nn.Conv2D(reduce_channels, 1, use_bias=False, in_channels=in_channels),
                    nn.BatchNorm(epsilon=BN_EPS, in_channels=reduce_channels),
                    make_prelu(reduce_channels, fast_prelu))
                in_channels = reduce_channels
            self.output = EmbeddingHead(in_channels, embedding_size, dropout=dropout)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


@register_model("attention_net56")
def attention_net56(embedding_size=512, **kwargs):
    """Attention-56 for faces: one attention module per stage (Wang et al.
    2017, "Residual Attention Network for Image Classification",
    arXiv 1704.06904).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`AttentionNet`.
    """
    return AttentionNet(ATTENTION_SPECS[56], embedding_size=embedding_size, **kwargs)


@register_model("attention_net92")
def attention_net92(embedding_size=512, **kwargs):
    """Attention-92 for faces: 1, 2 and 3 attention modules per stage
    (Wang et al. 2017, arXiv 1704.06904).

    Parameters
    ----------
    embedding_size : int, default 512
    **kwargs
        See :class:`AttentionNet`.
    """
    return AttentionNet(ATTENTION_SPECS[92], embedding_size=embedding_size, **kwargs)
