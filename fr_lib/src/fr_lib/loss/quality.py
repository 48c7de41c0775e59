"""Margins set by the embedding norm, read as image quality: MagFace and
AdaFace.

They follow the convention of :mod:`fr_lib.loss.margin` and of
:mod:`fr_lib.loss.advanced` (read their module docstrings), and take a third
input ``norm``, the embedding norms ``||z_i||`` of shape ``(batch,)``; their
class attribute ``extra_inputs = ("norm",)`` says so to generic code.
:class:`AdaFaceLoss` keeps running statistics of the norms, as described in
:mod:`fr_lib.loss.advanced`. Both are importable from
:mod:`fr_lib.loss.advanced` as well.

Registered names: ``magface``, ``adaface``.
"""
import math

import numpy as np
import mxnet as mx
from mxnet import autograd

from . import register_loss
from ._margin_ops import _arc_fallback, _state, _widen
from .margin import _MarginSoftmaxLoss

__all__ = ["MagFaceLoss", "AdaFaceLoss"]


def _check_norm(cos, norm):
    """Imperative check that there is one embedding norm per row."""
    if cos.ndim == 2 and norm.size != cos.shape[0]:
        raise ValueError(f"expected {cos.shape[0]} embedding norms (one per row of "
                         f"the cosine matrix), got norm of shape {norm.shape}")



@register_loss("magface")
class MagFaceLoss(_MarginSoftmaxLoss):
    r"""MagFace: magnitude-aware margin, arXiv 2103.06627.

    The embedding norm :math:`a_i = \|z_i\|` sets the ArcFace margin and is
    pulled up by a regulariser, so that the norm learns to measure quality:

    .. math:: L_i = -\log \frac{e^{s\,\psi(\theta_y, a_i)}}
              {e^{s\,\psi(\theta_y, a_i)} + \sum_{j \ne y} e^{s\cos\theta_j}}
              + \lambda_g\, g(a_i),\qquad
              g(a) = \frac{1}{a} + \frac{a}{u_a^2},

    .. math:: m(a) = l_m + \frac{u_m - l_m}{u_a - l_a}(a - l_a),\quad
              a \text{ clipped to } [l_a, u_a],

    and ψ is ArcFace's :math:`\cos(\theta + m(a))` with its fallback
    :math:`\cos\theta - m(a)\sin m(a)` once :math:`\theta + m(a) > \pi`
    (or the easy margin). As in the authors' code, the clipped norm enters
    both m(a) and g(a), and the gradient flows into ``norm`` through both
    (zero outside [l_a, u_a]). Averaging the per-sample loss over the batch
    gives the paper's :math:`L_{id} + \lambda_g\,\mathrm{mean}(g)`.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    l_a, u_a : float, default 10.0, 110.0
        Range of the norm, ``0 < l_a < u_a``.
    l_m, u_m : float, default 0.45, 0.8
        Margins at ``l_a`` and ``u_a``, ``0 <= l_m <= u_m < pi``.
    lambda_g : float, default 35.0
        Weight of the regulariser g, ``>= 0``.
    easy_margin : bool, default False
        As in :class:`~fr_lib.loss.ArcFaceLoss`.
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.

    Inputs
    ------
    cos : (batch, num_classes)
    label : (batch,)
    norm : (batch,)
        The norms of the embeddings before normalisation, e.g.
        ``mx.nd.norm(z, axis=1)``.

    Outputs
    -------
    loss : (batch,)
        No state is kept between calls.
    """

    def __init__(self, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8,
                 lambda_g=35.0, easy_margin=False, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        if not 0 < l_a < u_a:
            raise ValueError(f"norm range must satisfy 0 < l_a < u_a, "
                             f"got l_a={l_a}, u_a={u_a}")
        if not 0 <= l_m <= u_m < math.pi:
            raise ValueError(f"margins must satisfy 0 <= l_m <= u_m < pi, "
                             f"got l_m={l_m}, u_m={u_m}")
        if lambda_g < 0:
            raise ValueError(f"lambda_g must be >= 0, got {lambda_g}")
        self._l_a, self._u_a = float(l_a), float(u_a)
        self._l_m, self._u_m = float(l_m), float(u_m)
        self._slope = (self._u_m - self._l_m) / (self._u_a - self._l_a)
        self._lambda_g = float(lambda_g)
        self._easy_margin = bool(easy_margin)

    #: inputs after (cos, label), for generic code that calls every loss
    extra_inputs = ("norm",)

    def forward(self, cos, label, norm=None):
        if norm is None:
            raise TypeError("MagFaceLoss needs the embedding norms: loss(cos, label, norm)")
        if isinstance(cos, mx.nd.NDArray):
            (cos, label, norm), _ = _widen(cos, label, norm)
        return super().forward(cos, label, norm)

    def hybrid_forward(self, F, cos, label, norm):
        if F is mx.nd:
            _check_norm(cos, norm)
        a = F.minimum(F.maximum(norm.reshape((-1,)), self._l_a), self._u_a)
        margin = (a - self._l_a) * self._slope + self._l_m
        ce = super().hybrid_forward(F, cos, label, margin)
        return ce + self._lambda_g * (1.0 / a + a / self._u_a ** 2)

    def _target(self, F, cos_y, margin):
        with_margin = F.cos(self._theta(F, cos_y) + margin)
        return _arc_fallback(F, cos_y, with_margin, margin, self._easy_margin)


@register_loss("adaface")
class AdaFaceLoss(_MarginSoftmaxLoss):
    r"""AdaFace: quality-adaptive margin, arXiv 2204.00964.

    The embedding norm, standardised over the batch, acts as an image-quality
    proxy :math:`\widehat{\|z\|}` in [-1, 1] and moves the margin between
    ArcFace-like (high quality, hard samples emphasised) and CosFace-like
    (low quality, hard samples de-emphasised):

    .. math:: \widehat{\|z_i\|} = \mathrm{clip}\Big(\frac{\|z_i\| - \mu}
              {\sigma / h}, -1, 1\Big),\quad
              g_{angle} = -m\,\widehat{\|z_i\|},\quad
              g_{add} = m\,\widehat{\|z_i\|} + m,

    .. math:: f(\theta_y) = \cos\big(\mathrm{clip}(\theta_y + g_{angle},
              \epsilon, \pi - \epsilon)\big) - g_{add}

    and softmax cross-entropy over ``s·f(θ_y)`` and ``s·cos θ_j``. The norms
    are clipped to [0.001, 100] and detached (no gradient reaches ``norm``);
    the denominator is ``σ + eps`` (the authors' code adds 1e-3).

    State: :attr:`batch_mean` μ and :attr:`batch_std` σ, exponential moving
    averages of the batch mean and the (unbiased, n−1) batch standard
    deviation of the clipped norms, starting at 20 and 100:

    .. math:: \mu \leftarrow \alpha\,\mu_B + (1 - \alpha)\,\mu,\qquad
              \sigma \leftarrow \alpha\,\sigma_B + (1 - \alpha)\,\sigma,
              \quad \alpha = 0.01

    ``alpha`` is the weight of the new batch (``t_alpha`` of the authors'
    code and scripts; the paper's momentum 0.99 is the weight of the
    running value). Each training-mode call first updates μ and σ with the
    current batch, then computes the loss with them (the authors' order); a
    batch of one sample updates μ only (its standard deviation is
    undefined). Calls outside training use the stored values.

    Deliberate differences from the authors' code: non-target cosines are
    not clamped to [-1+1e-3, 1-1e-3] (the package convention: only values
    entering arccos are clamped), and the angle clip uses ``eps``.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    m : float, default 0.4
        Margin, ``0 <= m < pi/2``.
    h : float, default 0.333
        Concentration: about 68% of the standardised norms (one σ) map into
        [-h, h], ``h > 0``.
    alpha : float, default 0.01
        Momentum of the moving averages (weight of the new batch), in (0, 1].
    batch_mean, batch_std : float, default 20.0, 100.0
        Initial μ and σ (set them, or the attributes, to resume a run).
    eps : float, default 1e-7
        cos θ clamp before arccos, angle clip to [eps, π - eps], and the
        guard added to σ.

    Inputs
    ------
    cos, label
        As for every loss here.
    norm
        (batch,) the norms of the embeddings before normalisation.
    mean, std
        Only when the loss is called inside another hybridized block: (1,)
        arrays with μ and σ, used as they are and never updated.
    """

    _NORM_MIN, _NORM_MAX = 1e-3, 100.0  # the authors' clip of the norms

    def __init__(self, s=64.0, m=0.4, h=0.333, alpha=0.01, batch_mean=20.0,
                 batch_std=100.0, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        if not 0 <= m < math.pi / 2:
            raise ValueError(f"margin m must be in [0, pi/2), got {m}")
        if h <= 0:
            raise ValueError(f"concentration h must be positive, got {h}")
        if not 0 < alpha <= 1:
            raise ValueError(f"momentum alpha must be in (0, 1], got {alpha}")
        self._m, self._h, self._alpha = float(m), float(h), float(alpha)
        self.batch_mean = batch_mean
        self.batch_std = batch_std

    @property
    def batch_mean(self):
        """Running mean μ of the norms (a float; reading it waits for the device)."""
        return float(self._mean.asscalar())

    @batch_mean.setter
    def batch_mean(self, value):
        self._mean = _state(value)

    @property
    def batch_std(self):
        """Running standard deviation σ of the norms (a float)."""
        return float(self._std.asscalar())

    @batch_std.setter
    def batch_std(self, value):
        if not value > 0:
            raise ValueError(f"batch_std must be positive, got {value}")
        self._std = _state(value)

    def _safe_norm(self, F, norm):
        return F.minimum(F.maximum(norm.reshape((-1,)), self._NORM_MIN), self._NORM_MAX)

    #: inputs after (cos, label), for generic code that calls every loss
    extra_inputs = ("norm",)

    def forward(self, cos, label, norm=None, mean=None, std=None):
        if norm is None:
            raise TypeError("AdaFaceLoss needs the embedding norms: loss(cos, label, norm)")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if mean is not None:
            return super().forward(cos, label, norm, mean, std)
        if not isinstance(cos, mx.nd.NDArray):
            raise TypeError("AdaFaceLoss inside a hybridized parent needs mean and "
                            "std ((1,) arrays) as fourth and fifth inputs")
        (cos, label, norm), dtype = _widen(cos, label, norm)
        mean = self._mean.as_in_context(cos.context)
        std = self._std.as_in_context(cos.context)
        if autograd.is_training():
            # Outside the graph (see the module docstring), before the loss:
            # the authors update the statistics first, then use them.
            with autograd.pause():
                safe = self._safe_norm(mx.nd, norm).astype(np.float64)
                batch_mean = safe.mean()
                mean = self._alpha * batch_mean + (1.0 - self._alpha) * mean
                if safe.size > 1:
                    batch_std = mx.nd.sqrt(((safe - batch_mean) ** 2).sum()
                                           / (safe.size - 1))
                    std = self._alpha * batch_std + (1.0 - self._alpha) * std
        loss = super().forward(cos, label, norm, mean.astype(dtype), std.astype(dtype))
        self._mean, self._std = mean, std  # committed once the call succeeded
        return loss

    def hybrid_forward(self, F, cos, label, norm, mean, std):
        if F is mx.nd:
            _check_norm(cos, norm)
        safe = F.stop_gradient(self._safe_norm(F, norm))
        mean, std = F.stop_gradient(mean), F.stop_gradient(std)
        z = F.broadcast_div(F.broadcast_sub(safe, mean), std + self._eps) * self._h
        return super().hybrid_forward(F, cos, label, F.clip(z, -1.0, 1.0))

    def _target(self, F, cos_y, z):
        angle = self._theta(F, cos_y) - self._m * z          # θ + g_angle
        angle = F.minimum(F.maximum(angle, self._eps), math.pi - self._eps)
        return F.cos(angle) - (self._m * z + self._m)        # − g_add
