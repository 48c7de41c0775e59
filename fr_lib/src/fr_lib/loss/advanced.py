"""Margin losses beyond the seed: Sub-center ArcFace, CurricularFace, MagFace,
AdaFace and Circle loss.

They follow the convention of :mod:`fr_lib.loss.margin` (read its module
docstring): input ``cos`` of shape ``(batch, num_classes)`` from a normalised
FC head and integer ``label`` of shape ``(batch,)`` in any numeric dtype;
output the per-sample loss ``(batch,)``; cos θ clamped to ``[-1+eps, 1-eps]``
only where it enters ``arccos``; float16 computed in float32; imperative
calls raise :class:`ValueError` for bad labels, hybridized graphs cannot.
What differs:

- :class:`SubCenterArcFaceLoss` takes ``(batch, num_classes * k)`` cosines to
  ``k`` sub-centres per class, class-major.
- :class:`MagFaceLoss` and :class:`AdaFaceLoss` take a third input ``norm``,
  the embedding norms ``||z_i||`` of shape ``(batch,)``; their class
  attribute ``extra_inputs = ("norm",)`` says so to generic code.
- :class:`CurricularFaceLoss` and :class:`AdaFaceLoss` keep running
  statistics (exponential moving averages). The state lives outside the graph,
  on the Python object, as a (1,) float64 NDArray on the input's device (no
  host synchronisation per step). It advances only in training mode (inside
  ``autograd.record()``), by the same rule with or without ``hybridize()``:
  it is updated with the current batch first, and the updated value is the
  one used for that batch, as in the authors' code. It is fed to the graph as
  an extra input and carries no gradient. It is not a ``Parameter``, so
  ``save_parameters`` does not store it: save the attributes yourself and set
  them to resume. Each call advances the state once, so with several devices
  calling the loss on their own shards, one step advances it once per device.
- :class:`CircleLoss` changes every logit, not only the true-class one.

Registered names: ``subcenter_arcface``, ``curricularface``, ``magface``,
``adaface``, ``circle``.
"""
import math

import numpy as np
import mxnet as mx
from mxnet import autograd

from . import register_loss
from .margin import (ArcFaceLoss, _MarginSoftmaxLoss, _check_inputs,
                     _graph_checked_labels)

__all__ = ["SubCenterArcFaceLoss", "CurricularFaceLoss", "MagFaceLoss",
           "AdaFaceLoss", "CircleLoss"]


def _onehot_mask(F, cos, label):
    """1 at (i, label_i), 0 elsewhere, shaped like ``cos``."""
    return F.broadcast_equal(F.contrib.arange_like(cos, axis=1).reshape((1, -1)),
                             label.reshape((-1, 1)))


def _arc_fallback(F, cos_y, with_margin, m, easy_margin=False):
    """ArcFace's choice between cos(θ + m) and its fallback ``cos θ − m·sin m``
    once θ + m passes π; ``m`` is a float or a per-sample array."""
    if easy_margin:
        return F.where(cos_y > 0, with_margin, cos_y)
    if isinstance(m, float):
        threshold, shift = math.cos(math.pi - m), math.sin(m) * m
    else:
        threshold, shift = F.cos(math.pi - m), F.sin(m) * m
    return F.where(cos_y > threshold, with_margin, cos_y - shift)


def _check_norm(cos, norm):
    """Imperative check that there is one embedding norm per row."""
    if cos.ndim == 2 and norm.size != cos.shape[0]:
        raise ValueError(f"expected {cos.shape[0]} embedding norms (one per row of "
                         f"the cosine matrix), got norm of shape {norm.shape}")


def _state(value):
    return mx.nd.array([float(value)], dtype=np.float64)


def _widen(cos, label, *others):
    """Cast as the base class does (fp16 -> fp32, the rest to the cosine
    dtype) before the state update sees the inputs; the base's own casts
    then have nothing left to do."""
    dtype = np.float32 if np.dtype(cos.dtype) == np.float16 else np.dtype(cos.dtype).type
    return [x.astype(dtype, copy=False) for x in (cos, label) + others], dtype


@register_loss("subcenter_arcface")
class SubCenterArcFaceLoss(ArcFaceLoss):
    r"""Sub-center ArcFace (Deng et al., "Sub-center ArcFace: Boosting Face
    Recognition by Large-scale Noisy Web Faces", ECCV 2020; published at
    ECCV without an arXiv preprint).

    Each class ``c`` has ``k`` sub-centres; a sample is compared with the
    nearest one, and ArcFace is applied to that cosine:

    .. math:: \cos\theta_{c} = \max_{1 \le i \le k} \cos\theta_{c,i},\qquad
              L = \text{ArcFace}(\cos\theta, y)

    The input holds the cosines to all ``num_classes * k`` sub-centres,
    class-major: columns ``c*k .. c*k+k-1`` belong to class ``c`` (a
    ``NormDense`` head with ``num_classes * k`` units, reshaped to
    ``(batch, num_classes, k)``). Noisy samples then gather at non-dominant
    sub-centres instead of pulling the dominant one. With ``k=1`` it is
    :class:`~fr_lib.loss.ArcFaceLoss`. The max passes the gradient to the
    winning sub-centre only.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    m : float, default 0.5
        Angular margin in radians, ``0 <= m < pi``.
    k : int, default 3
        Sub-centres per class (the paper's default), ``k >= 1``.
    easy_margin : bool, default False
        As in :class:`~fr_lib.loss.ArcFaceLoss`.
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.

    Inputs
    ------
    cos : (batch, num_classes * k)
        Cosines to every sub-centre, the ``k`` of a class side by side.
    label : (batch,)
        Class ids in ``[0, num_classes)``.

    Outputs
    -------
    loss : (batch,)

    Raises
    ------
    ValueError
        On an imperative call whose column count is not divisible by ``k``.
    """

    def __init__(self, s=64.0, m=0.5, k=3, easy_margin=False, eps=1e-7, **kwargs):
        super().__init__(s=s, m=m, easy_margin=easy_margin, eps=eps, **kwargs)
        if int(k) != k or k < 1:
            raise ValueError(f"number of sub-centres k must be an integer >= 1, got {k}")
        self._k = int(k)

    def _check_columns(self, cos):
        if cos.ndim != 2:
            raise ValueError(f"expected the cosine matrix of shape "
                             f"(batch, num_classes * k), got shape {cos.shape}")
        if cos.shape[1] % self._k:
            raise ValueError(f"the cosine matrix has {cos.shape[1]} columns, "
                             f"not divisible by k={self._k} sub-centres per class")

    def hybrid_forward(self, F, cos, label):
        if F is mx.nd:
            self._check_columns(cos)
        # (batch, C*k) -> (batch, C, k): class-major, then the nearest sub-centre
        cos = F.max(cos.reshape((0, -4, -1, self._k)), axis=2)
        return super().hybrid_forward(F, cos, label)


@register_loss("curricularface")
class CurricularFaceLoss(_MarginSoftmaxLoss):
    r"""CurricularFace: adaptive curriculum learning loss, arXiv 2004.00288.

    .. math:: L = -\log \frac{e^{s\,T(\cos\theta_y)}}{e^{s\,T(\cos\theta_y)}
              + \sum_{j \ne y} e^{s\,N(t, \cos\theta_j)}},\qquad
              N(t, \cos\theta_j) = \begin{cases} \cos\theta_j &
              \cos\theta_j \le \cos(\theta_y + m) \\
              \cos\theta_j\,(t + \cos\theta_j) & \cos\theta_j > \cos(\theta_y + m)
              \end{cases}

    with :math:`T(\cos\theta_y) = \cos(\theta_y + m)` and ArcFace's fallback
    :math:`\cos\theta_y - m\sin m` once :math:`\theta_y + m > \pi` (as in the
    authors' code). Hard negatives (those above :math:`\cos(\theta_y + m)`,
    compared with the true cos(θ_y + m), not the fallback, as in the
    authors' code) are re-weighted: early in training ``t`` is near 0 and
    they are damped (easy samples first), later ``t`` grows and they are
    emphasised. ``t`` is an exponential moving average of the batch mean of
    the true-class cosines:

    .. math:: t \leftarrow \alpha\,\overline{\cos\theta_y} + (1 - \alpha)\,t,
              \quad t^{(0)} = 0,\ \alpha = 0.01

    State: :attr:`t`. Each training-mode call (inside ``autograd.record()``)
    first updates ``t`` with the current batch (cosines clipped to [-1, 1]),
    then computes the loss with the updated ``t`` (the order of the authors'
    code); calls outside training use ``t`` unchanged. No gradient flows
    through ``t`` or through the hard-negative mask (the paper detaches both);
    the gradient of a hard negative's logit is ``t + 2 cos θ_j``.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    m : float, default 0.5
        Angular margin in radians, ``0 <= m < pi``.
    alpha : float, default 0.01
        Momentum of the moving average (weight of the new batch), in (0, 1].
    t : float, default 0.0
        Initial ``t`` (set it, or the attribute, to resume a run).
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.

    Inputs
    ------
    cos, label
        As for every loss here. When the loss is called inside another
        hybridized block (symbols instead of NDArrays) pass ``t``, a (1,)
        array, yourself; a given ``t`` is used as it is and never updated.
    """

    def __init__(self, s=64.0, m=0.5, alpha=0.01, t=0.0, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        if not 0 <= m < math.pi:
            raise ValueError(f"margin m must be in [0, pi), got {m}")
        if not 0 < alpha <= 1:
            raise ValueError(f"momentum alpha must be in (0, 1], got {alpha}")
        self._m = float(m)
        self._alpha = float(alpha)
        self._t = _state(t)

    @property
    def t(self):
        """Current ``t`` (a float; reading it waits for the device)."""
        return float(self._t.asscalar())

    @t.setter
    def t(self, value):
        self._t = _state(value)

    def forward(self, cos, label, t=None):
        if t is not None:
            return super().forward(cos, label, t)
        if not isinstance(cos, mx.nd.NDArray):
            raise TypeError("CurricularFaceLoss inside a hybridized parent needs "
                            "t (a (1,) array) as third input")
        (cos, label), dtype = _widen(cos, label)
        t = self._t.as_in_context(cos.context)
        if autograd.is_training():
            # Computed here, not in the graph: a cached graph cannot hand the
            # new state back, and the paper uses the updated t for this batch.
            with autograd.pause():
                cos_y = mx.nd.pick(cos, label.reshape((-1,)), axis=1)
                batch_mean = mx.nd.clip(cos_y, -1.0, 1.0).astype(np.float64).mean()
                t = self._alpha * batch_mean + (1.0 - self._alpha) * t
        loss = super().forward(cos, label, t.astype(dtype))
        self._t = t  # committed only once the call succeeded (bad labels raise)
        return loss

    def hybrid_forward(self, F, cos, label, t):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        if F is not mx.nd:
            label = _graph_checked_labels(F, cos, label)
        cos_y = F.pick(cos, label, axis=1)
        cos_ym = F.cos(self._theta(F, cos_y) + self._m)
        target = _arc_fallback(F, cos_y, cos_ym, self._m)
        # the mask is piecewise constant and t a statistic: both detached
        hard = F.stop_gradient(F.broadcast_greater(cos, cos_ym.reshape((-1, 1))))
        t = F.stop_gradient(t).reshape((1, 1))
        others = F.where(hard, cos * F.broadcast_add(cos, t), cos)
        logits = F.where(_onehot_mask(F, cos, label),
                         F.broadcast_like(target.reshape((-1, 1)), cos), others)
        logp = F.log_softmax(logits * self._s, axis=1)
        return -F.pick(logp, label, axis=1)


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


@register_loss("circle")
class CircleLoss(_MarginSoftmaxLoss):
    r"""Circle loss, class-level form on cosines, arXiv 2002.10857.

    With :math:`s_p = \cos\theta_y` and :math:`s_n = \cos\theta_j` (j ≠ y):

    .. math:: L = \log\Big(1 + \sum_{j \ne y}
              e^{\gamma\alpha_n^j (s_n^j - \Delta_n)}\,
              e^{-\gamma\alpha_p (s_p - \Delta_p)}\Big),

    .. math:: \alpha_p = [1 + m - s_p]_+,\quad \alpha_n = [s_n + m]_+,\quad
              \Delta_p = 1 - m,\quad \Delta_n = m.

    The weights α are detached (treated as constants in the gradient, as in
    the paper's derivation and the authors' code), so a score far from its
    optimum (O_p = 1 + m, O_n = −m) gets a larger step. The loss equals
    softmax cross-entropy over the logits :math:`\gamma\alpha_p(s_p -
    \Delta_p)` for the true class and :math:`\gamma\alpha_n(s_n - \Delta_n)`
    for the others, which is how it is computed: a log-softmax, stable for
    γ = 256. With a single class there are no negatives and the loss is 0.

    Parameters
    ----------
    gamma : float, default 256.0
        Scale γ (the paper's choice for face recognition), ``> 0``.
    m : float, default 0.25
        Relaxation margin, ``0 <= m < 1``.
    eps : float, default 1e-7
        Unused (no arccos), accepted for a uniform interface.

    Inputs
    ------
    cos : (batch, num_classes)
    label : (batch,)

    Outputs
    -------
    loss : (batch,)
        No state is kept between calls.
    """

    def __init__(self, gamma=256.0, m=0.25, eps=1e-7, **kwargs):
        if gamma <= 0:
            raise ValueError(f"scale gamma must be positive, got {gamma}")
        super().__init__(gamma, eps, **kwargs)
        if not 0 <= m < 1:
            raise ValueError(f"margin m must be in [0, 1), got {m}")
        self._m = float(m)

    def hybrid_forward(self, F, cos, label):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        if F is not mx.nd:
            label = _graph_checked_labels(F, cos, label)
        cos_y = F.pick(cos, label, axis=1)
        alpha_p = F.stop_gradient(F.relu(1.0 + self._m - cos_y))
        positive = alpha_p * (cos_y - (1.0 - self._m))
        alpha_n = F.stop_gradient(F.relu(cos + self._m))
        negative = alpha_n * (cos - self._m)
        logits = F.where(_onehot_mask(F, cos, label),
                         F.broadcast_like(positive.reshape((-1, 1)), cos), negative)
        logp = F.log_softmax(logits * self._s, axis=1)
        return -F.pick(logp, label, axis=1)
