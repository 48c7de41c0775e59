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
from ..utils.checks import check_int
from ._margin_ops import _arc_fallback, _onehot_mask, _state, _widen
from .margin import (ArcFaceLoss, _MarginSoftmaxLoss, _check_inputs,
                     _graph_checked_labels)
# MagFace and AdaFace (margins set by the embedding norm) live in
# fr_lib.loss.quality; imported here too, where they were first defined
from .quality import AdaFaceLoss, MagFaceLoss

__all__ = ["SubCenterArcFaceLoss", "CurricularFaceLoss", "MagFaceLoss",
           "AdaFaceLoss", "CircleLoss"]



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
        self._k = check_int("number of sub-centres k", k, 1)

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
