"""Building blocks shared by the face backbones, heads and losses.

:class:`PReLU` is a drop-in replacement for :class:`mxnet.gluon.nn.PReLU` built
from cheap element-wise operators; :func:`make_prelu` picks one of the two;
:class:`SEBlock` is the squeeze-and-excitation gate used by SE-LResNet;
:func:`l2_normalize_rows` is the row normaliser of every ``hybrid_forward``
(:class:`~fr_lib.model_zoo.NormDense`, the metric losses).
"""
from mxnet import initializer
from mxnet.gluon import nn


__all__ = ["PReLU", "make_prelu", "SEBlock", "BN_EPS", "l2_normalize_rows"]

# InsightFace trains its MXNet backbones with eps=2e-5; using the same value
# keeps converted InsightFace weights numerically identical.
BN_EPS = 2e-5


def l2_normalize_rows(F, x, eps=1e-12):
    r"""Each row of ``x`` over its L2 length: ``x / sqrt(sum(x**2) + eps)``.

    Book: ``chapter_loss/normalization`` (the normalised embeddings and class
    weights of NormFace).

    For use inside ``hybrid_forward``: ``F`` is ``mx.nd`` or ``mx.sym``. It
    is one fused operator, ``L2Normalization(mode='instance')``, forward and
    backward (the four broadcast operators it replaces made a 200k-class
    :class:`~fr_lib.model_zoo.NormDense` step 2x slower). The NumPy / NDArray
    counterpart outside a graph is :func:`fr_lib.metrics.l2_normalize`, the
    same formula.

    Parameters
    ----------
    F : module
        ``mxnet.nd`` or ``mxnet.sym``.
    x : NDArray or Symbol, shape (N, D)
        One vector per row (an ``(N, ...)`` input is normalised per sample,
        over all its other axes).
    eps : float, default 1e-12
        Added under the square root: a zero row stays zero, not NaN.
    """
    return F.L2Normalization(x, eps=float(eps), mode="instance")


class PReLU(nn.HybridBlock):
    r"""Parametric ReLU built from cheap element-wise operators.

    The same function as :class:`mxnet.gluon.nn.PReLU` (He et al.,
    arXiv 1502.01852), :math:`f(x) = \mathrm{relu}(x) - \alpha\,
    \mathrm{relu}(-x)`, i.e. :math:`x` for :math:`x \ge 0` and
    :math:`\alpha x` otherwise, with one learned slope per channel (axis 1).

    MXNet 1.9 computes ``nn.PReLU`` with ``LeakyReLU(act_type='prelu')``,
    whose CPU backward pass is slow (it took 6.0 s of a 6.3 s MobileFaceNet
    training step, batch 32, one thread). This block evaluates the
    equivalent form :math:`x - (1 - \alpha) \min(x, 0)` with
    ``minimum``, ``broadcast_like``, ``elemwise_mul`` and ``elemwise_sub``:
    four full-size passes, and a slope gradient that MXNet reduces quickly.
    Of the formulations we timed it was the fastest both ways: that step
    took 2.8 s, the forward pass 0.86 s instead of 1.05 s. The rounding
    error of the subtraction is a few float32 ulps of ``x``.

    This formula is what always runs. :func:`fr_lib.native.to_native`
    (which the trainer, the evaluator and ``prepare_for_inference`` call on
    CPU) swaps the block for its native form, the operator ``fr_prelu``: one
    pass forward and one backward, about twice as fast again for a whole
    MobileFaceNet training step. Exported files never need fr_lib: a plain
    ``net.export()`` of a converted network writes ``fr_prelu`` as MXNet's
    own ``LeakyReLU(act_type='prelu')`` (:func:`fr_lib.ops.plain_symbol`).

    The parameter has the same name (``alpha``), shape ``(in_channels,)``
    and initial value (0.25) as in ``nn.PReLU``, so parameter files saved
    from one load into the other.

    Parameters
    ----------
    alpha_initializer : Initializer, default Constant(0.25)
    in_channels : int, default 1
        Number of slopes: 1 (one shared slope) or the size of axis 1.
    ndim : int, default 4
        Number of input dimensions when ``in_channels > 1`` (4 for feature
        maps, 2 for ``(batch, features)``): a symbolic graph does not know
        its input's rank, and the slopes must be reshaped to
        ``(1, C, 1, ..., 1)`` to broadcast. Ignored for a single slope.
    """

    def __init__(self, alpha_initializer=initializer.Constant(0.25),
                 in_channels=1, ndim=4, **kwargs):
        super().__init__(**kwargs)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if ndim < 2:
            raise ValueError(f"ndim must be >= 2, got {ndim}")
        self._in_channels = in_channels
        self._alpha_shape = (1, -1) + (1,) * (ndim - 2)
        with self.name_scope():
            self.alpha = self.params.get("alpha", shape=(in_channels,),
                                         init=alpha_initializer)

    def hybrid_forward(self, F, x, alpha):
        negative = F.minimum(x, 0.0)
        if self._in_channels == 1:  # one slope: broadcasts against any rank
            return x - F.broadcast_mul(1 - alpha, negative)
        # broadcast_like + elemwise_mul rather than broadcast_mul: MXNet's
        # backward of broadcast_mul reduces the slope gradient over (N, H, W)
        # about 3x slower than broadcast_like's does.
        keep = F.broadcast_like(F.reshape(1 - alpha, shape=self._alpha_shape), x)
        return x - keep * negative

    def __repr__(self):
        return f"{self.__class__.__name__}({self._in_channels})"


def make_prelu(channels, fast=True, ndim=4):
    """A per-channel PReLU: :class:`PReLU` if ``fast`` else ``nn.PReLU``.

    Both hold the same parameter, so weights trained with one load into
    the other.
    """
    if fast:
        return PReLU(in_channels=channels, ndim=ndim)
    return nn.PReLU(in_channels=channels)


class SEBlock(nn.HybridBlock):
    """Squeeze-and-excitation gate (Hu et al., arXiv 1709.01507).

    Book: introduced in ``chapter_backbone/se-attention`` (SE 与注意力变体).

    ``x * sigmoid(W2 prelu(W1 avgpool(x)))`` where ``W1`` maps ``channels``
    to ``channels // reduction`` and ``W2`` maps back; both are 1x1
    convolutions with bias, as in InsightFace's ``fresnet`` SE units.

    Parameters
    ----------
    channels : int
        Channels of the input (and output).
    reduction : int, default 16
    fast_prelu : bool, default True
        Use :class:`PReLU` rather than ``nn.PReLU``.
    """

    def __init__(self, channels, reduction=16, fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        hidden = max(1, channels // reduction)
        with self.name_scope():
            self.squeeze = nn.Conv2D(hidden, 1, in_channels=channels)
            self.act = make_prelu(hidden, fast_prelu)
            self.excite = nn.Conv2D(channels, 1, in_channels=hidden)

    def hybrid_forward(self, F, x):
        w = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg")
        w = F.sigmoid(self.excite(self.act(self.squeeze(w))))
        return F.broadcast_mul(x, w)
