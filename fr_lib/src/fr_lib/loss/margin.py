"""Softmax losses on normalised features: NormFace, CosFace/AM-Softmax,
ArcFace, the combined margin of InsightFace and SphereFace/A-Softmax.

The convention (all losses in this module)
------------------------------------------
Input
    ``cos``: the cosine matrix cos θ of shape ``(batch, num_classes)`` that a
    normalised FC head produces (embeddings and class weights both
    L2-normalised, no bias), and ``label``: integer class ids of shape
    ``(batch,)`` (or ``(batch, 1)``), given as any numeric dtype.
Output
    The per-sample loss, shape ``(batch,)``: softmax cross-entropy over the
    logits ``s·cos θ_j`` for the other classes ``j`` and ``s·f(θ_y)`` for the
    true class ``y``, where ``f`` is the margin of each loss. Average it
    yourself (``loss(cos, label).mean()``), like ``gluon.loss`` losses.
Numerical safety
    cos θ is clamped to ``[-1 + eps, 1 - eps]`` (``eps=1e-7``) only where it
    goes into ``arccos``, so cos θ = ±1, or 1 + 1e-7 from rounding, gives a
    finite loss and gradient. Linear terms use the unclamped value.
Errors
    Called imperatively, a wrong shape, a non-integer label or a label outside
    ``[0, num_classes)`` raises :class:`ValueError` naming the bad label and
    the number of classes (this copies the labels to the host once per
    call). Under ``hybridize()`` an out-of-range label fails the graph with
    an ``MXNetError`` when its result is read (fr_lib's native operator
    checks the labels; the MXNet formulas check them with
    ``take(mode='raise')``), and no operator ever indexes outside the cosine
    matrix. :class:`~fr_lib.train.FaceTrainer` checks every batch's labels
    on the host before the step, naming the batch.
Precision
    float16 input (AMP on GPU) is computed in float32 and the loss is
    returned in float32; float32 and float64 are computed in their own type.

Every loss is a ``HybridBlock`` with no parameters, so it needs no
``initialize()``; registered names: ``normface``, ``cosface``, ``amsoftmax``,
``arcface``, ``combined``, ``sphereface``, ``asoftmax``.
"""
import math

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import HybridBlock

from . import register_loss
from ..utils.checks import check_int, check_labels, compute_dtype as _compute_dtype

__all__ = ["NormFaceLoss", "CosFaceLoss", "ArcFaceLoss", "CombinedMarginLoss",
           "SphereFaceLoss"]


def _check_inputs(cos, label):
    """Imperative-only checks of the convention (ValueError on violation)."""
    if cos.ndim != 2:
        raise ValueError(f"expected the cosine matrix of shape (batch, num_classes), "
                         f"got shape {cos.shape}")
    _check_labels(label, *cos.shape)


def _graph_checked_labels(F, cos, label):
    """``label`` (flat), failing the graph unless every entry is in
    ``[0, num_classes)``: ``take(mode='raise')`` on one row of ``cos`` is the
    only MXNet operator that checks indices; its result is multiplied by
    zero and added, without gradient, so the values are unchanged."""
    label = label.reshape((-1,))
    row = F.slice_axis(cos, axis=0, begin=0, end=1).reshape((-1,))
    probe = F.take(F.zeros_like(row), label, mode="raise")
    return label + F.stop_gradient(probe) * 0


def _check_labels(label, batch, num_classes):
    check_labels(label, num_classes, batch, per="row of the cosine matrix")


class _MarginSoftmaxLoss(HybridBlock):
    """Softmax cross-entropy over ``s·cos θ`` with the true-class logit
    replaced by ``s·target(cos θ_y)``; subclasses define ``_target``."""

    def __init__(self, s, eps=1e-7, **kwargs):
        super().__init__(**kwargs)
        if s <= 0:
            raise ValueError(f"scale s must be positive, got {s}")
        if not 0 < eps < 1e-2:
            raise ValueError(f"eps must be in (0, 0.01), got {eps}")
        self._s = float(s)
        self._eps = float(eps)

    def forward(self, cos, label, *args):
        if isinstance(cos, mx.nd.NDArray):
            dtype = _compute_dtype(cos.dtype)
            if cos.dtype != dtype:
                cos = cos.astype(dtype)
            # broadcast_equal and where need one dtype for labels and cosines
            if label.dtype != dtype:
                label = label.astype(dtype)
        return super().forward(cos, label, *args)

    def _theta(self, F, cos_y):
        # The clamp keeps arccos and its derivative -1/sqrt(1-x^2) finite.
        # Scalar maximum/minimum keep the bounds in double precision; clip()
        # stores them as float32 (1 - 1e-7 would become 1 - 1.19e-7).
        return F.arccos(F.minimum(F.maximum(cos_y, -1.0 + self._eps), 1.0 - self._eps))

    def _target(self, F, cos_y, *args):
        raise NotImplementedError

    def hybrid_forward(self, F, cos, label, *args):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        if F is not mx.nd:
            label = _graph_checked_labels(F, cos, label)
        cos_y = F.pick(cos, label, axis=1)
        target = self._target(F, cos_y, *args)
        if target is not None:
            cos = _replace_target(F, cos, label, target)
        logp = F.log_softmax(cos * self._s, axis=1)
        return -F.pick(logp, label, axis=1)


def _replace_target(F, cos, label, target):
    """``cos`` with entry ``(i, label[i])`` replaced by ``target[i]``.

    Only one logit per row changes, so this must not cost passes over the
    (batch, num_classes) matrix: ``index_copy`` on the flattened matrix is one
    copy forward and one backward (the gradient at the replaced entries goes
    to ``target``), where a mask + ``where`` took about eight passes and made
    the whole normalised-FC step 15 % slower (benchmarks/bench_loss.py).
    """
    # int64 flat indices: row * num_classes + label passes 2**24 (the float32
    # integer limit) already at batch 256 with 100k classes.
    num_classes = F.slice_axis(F.shape_array(cos), axis=0, begin=1, end=2)
    rows = F.cast(F.contrib.arange_like(label), dtype="int64")
    # clipped like pick(): never an index outside the matrix, whatever the labels
    inside = F.broadcast_minimum(F.maximum(F.cast(label, dtype="int64"), 0),
                                 num_classes - 1)
    flat = F.broadcast_add(F.broadcast_mul(rows, num_classes), inside)
    replaced = F.contrib.index_copy(cos.reshape((-1, 1)), flat, target.reshape((-1, 1)))
    return F.reshape_like(replaced, cos)


@register_loss("normface")
class NormFaceLoss(_MarginSoftmaxLoss):
    r"""NormFace (normalised softmax), arXiv 1704.06369.

    .. math:: L = -\log \frac{e^{s\cos\theta_y}}{\sum_j e^{s\cos\theta_j}}

    Parameters
    ----------
    s : float, default 30.0
        Scale. Cosines lie in [-1, 1], so without ``s`` the softmax cannot
        become confident; the paper shows the loss has a lower bound that
        only falls with a large enough scale.
    eps : float, default 1e-7
        Unused here (no arccos), accepted for a uniform interface.

    Inputs
    ------
    cos : (batch, num_classes)
        See the module docstring for the convention.
    label : (batch,)

    Outputs
    -------
    loss : (batch,)
    """

    def __init__(self, s=30.0, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)

    def _target(self, F, cos_y, *args):
        return None  # no margin: the true-class logit stays s·cos θ_y


@register_loss("amsoftmax")
@register_loss("cosface")
class CosFaceLoss(_MarginSoftmaxLoss):
    r"""CosFace / AM-Softmax: additive cosine margin, arXiv 1801.09414 and
    1801.05599.

    .. math:: L = -\log \frac{e^{s(\cos\theta_y - m)}}
              {e^{s(\cos\theta_y - m)} + \sum_{j \ne y} e^{s\cos\theta_j}}

    Parameters
    ----------
    s : float, default 64.0
        Scale (CosFace uses 64; AM-Softmax used 30 -- pass ``s=30`` for it).
    m : float, default 0.35
        Cosine margin (both papers: 0.35).
    eps : float, default 1e-7
        Unused here (no arccos), accepted for a uniform interface.
    """

    def __init__(self, s=64.0, m=0.35, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        self._m = float(m)

    def _target(self, F, cos_y, *args):
        return cos_y - self._m


@register_loss("arcface")
class ArcFaceLoss(_MarginSoftmaxLoss):
    r"""ArcFace: additive angular margin, arXiv 1801.07698.

    .. math:: L = -\log \frac{e^{s\,\psi(\theta_y)}}
              {e^{s\,\psi(\theta_y)} + \sum_{j \ne y} e^{s\cos\theta_j}},
       \quad \psi(\theta) = \begin{cases} \cos(\theta + m) & \theta + m \le \pi \\
       \cos\theta - m\sin m & \theta + m > \pi \end{cases}

    ``cos(θ + m)`` stops decreasing once θ + m passes π, which would reward
    pushing a sample further from its class; InsightFace's fallback (used
    here) switches to the CosFace-like ``cos θ − sin(π − m)·m`` when
    ``cos θ ≤ cos(π − m)``.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    m : float, default 0.5
        Angular margin in radians, ``0 <= m < pi``.
    easy_margin : bool, default False
        Apply the margin only where cos θ > 0 (θ < π/2) and use cos θ
        elsewhere, instead of the fallback above.
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.
    """

    def __init__(self, s=64.0, m=0.5, easy_margin=False, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        if not 0 <= m < math.pi:
            raise ValueError(f"margin m must be in [0, pi), got {m}")
        self._m = float(m)
        self._easy_margin = bool(easy_margin)
        self._th = math.cos(math.pi - m)        # θ + m > π  <=>  cos θ < th
        self._mm = math.sin(math.pi - m) * m    # = m·sin m

    def _target(self, F, cos_y, *args):
        with_margin = F.cos(self._theta(F, cos_y) + self._m)
        if self._easy_margin:
            return F.where(cos_y > 0, with_margin, cos_y)
        return F.where(cos_y > self._th, with_margin, cos_y - self._mm)

    def _target_slope(self, F, cos_y):
        """d target / d cos θ_y, the derivative autograd takes of _target:
        sin(θ + m) / sin θ inside the clamp, 0 where cos θ is clamped, 1 on
        the fallback (or easy-margin) branch."""
        lo, hi = -1.0 + self._eps, 1.0 - self._eps
        theta = self._theta(F, cos_y)
        inside = (cos_y > lo) * (cos_y < hi)
        with_margin = inside * F.sin(theta + self._m) / F.sin(theta)
        branch = cos_y > 0 if self._easy_margin else cos_y > self._th
        return F.where(branch, with_margin, F.ones_like(cos_y))


@register_loss("combined")
class CombinedMarginLoss(_MarginSoftmaxLoss):
    r"""Combined margin of InsightFace: ``cos(m1·θ + m2) − m3``
    (ArcFace paper, arXiv 1801.07698, section 2.2).

    .. math:: \psi(\theta) = \begin{cases} \cos(m_1\theta + m_2) - m_3
              & m_1\theta + m_2 \le \pi \\
              \cos\theta - \delta\,\sin\theta_t - m_3 & \text{otherwise}
              \end{cases}

    with the threshold angle :math:`\theta_t = (\pi - m_2)/m_1` and the
    angle shift there :math:`\delta = (m_1 - 1)\theta_t + m_2`. The fallback
    is the first-order expansion :math:`\cos(\theta + \delta) \approx
    \cos\theta - \delta\sin\theta` frozen at :math:`\theta_t`; for ``m1=1``
    it is exactly ArcFace's ``cos θ − m2·sin(π − m2)``, so ``(1, m, 0)``
    equals :class:`ArcFaceLoss` and ``(1, 0, m)`` equals :class:`CosFaceLoss`.
    When :math:`\theta_t \ge \pi` no angle overflows and no fallback is used.
    The generalisation to ``m1 != 1`` is our choice: InsightFace's combined
    margin has no fallback.

    Parameters
    ----------
    s : float, default 64.0
        Scale.
    m1 : float, default 1.0
        Multiplicative angular margin (SphereFace-like), ``m1 > 0``.
    m2 : float, default 0.5
        Additive angular margin (ArcFace), ``0 <= m2 < pi``.
    m3 : float, default 0.0
        Additive cosine margin (CosFace).
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.
    """

    def __init__(self, s=64.0, m1=1.0, m2=0.5, m3=0.0, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        if m1 <= 0:
            raise ValueError(f"m1 must be positive, got {m1}")
        if not 0 <= m2 < math.pi:
            raise ValueError(f"m2 must be in [0, pi), got {m2}")
        self._m1, self._m2, self._m3 = float(m1), float(m2), float(m3)
        theta_t = (math.pi - m2) / m1
        if theta_t < math.pi:
            self._th = math.cos(theta_t)
            self._mm = ((m1 - 1.0) * theta_t + m2) * math.sin(theta_t)
        else:
            self._th = None

    def _target(self, F, cos_y, *args):
        with_margin = F.cos(self._theta(F, cos_y) * self._m1 + self._m2) - self._m3
        if self._th is None:
            return with_margin
        return F.where(cos_y > self._th, with_margin, cos_y - self._mm - self._m3)


@register_loss("asoftmax")
@register_loss("sphereface")
class SphereFaceLoss(_MarginSoftmaxLoss):
    r"""SphereFace / A-Softmax: multiplicative angular margin, arXiv 1704.08063.

    .. math:: \psi(\theta) = (-1)^k \cos(m\theta) - 2k,\quad
              k = \lfloor m\theta/\pi \rfloor,\qquad
              f_y = s\,\frac{\lambda\cos\theta_y + \psi(\theta_y)}{1 + \lambda}

    and ``s·cos θ_j`` for the other classes. ψ is monotone decreasing on
    [0, π], unlike cos(mθ). The annealing weight λ starts large (almost plain
    softmax) and decays as in the reference Caffe layer:

    .. math:: \lambda = \max(\lambda_{min}, \text{base}\,(1 + \gamma\,it)^{-\text{power}})

    where ``it`` counts the training-mode forward calls made so far,
    including the current one (Caffe increments before computing, so the
    first training call uses ``it = 1``). The counter lives in Python
    (:attr:`iteration`) and λ is fed to the graph as an input on every call,
    so it keeps advancing under ``hybridize()`` (gluon-face froze it).
    Forward calls outside ``autograd.record()`` (or with
    ``train_mode=False``) do not advance it and use λ(:attr:`iteration`).

    The original A-Softmax multiplies by the feature norm ``||x||``; with a
    cosine input the norm is gone, so a fixed scale ``s`` takes its place
    (as in the normalised variants of the SphereFace follow-ups).

    Parameters
    ----------
    m : int, default 4
        Angular margin (integer >= 1; ``m=1`` is NormFace).
    s : float, default 30.0
        Scale replacing ``||x||`` (our choice; not from the paper).
    base, gamma, power, lambda_min : float, default 1000, 0.12, 1, 5
        The λ schedule of the authors' released Caffe prototxt.
    iteration : int, default 0
        Training calls already made (set it to resume a run).
    eps : float, default 1e-7
        cos θ is clamped to [-1+eps, 1-eps] before arccos.

    Inputs
    ------
    cos, label
        As for every loss here. When the loss is called inside another
        hybridized block (symbols instead of NDArrays) pass ``lam``, a (1,)
        array holding λ, yourself.
    """

    def __init__(self, m=4, s=30.0, base=1000.0, gamma=0.12, power=1.0,
                 lambda_min=5.0, iteration=0, eps=1e-7, **kwargs):
        super().__init__(s, eps, **kwargs)
        self._m = check_int("SphereFace margin m", m, 1)
        self.base, self.gamma = float(base), float(gamma)
        self.power, self.lambda_min = float(power), float(lambda_min)
        self.iteration = int(iteration)

    def lambda_at(self, iteration):
        """λ after ``iteration`` training calls (the schedule above)."""
        return max(self.lambda_min,
                   self.base * (1.0 + self.gamma * iteration) ** (-self.power))

    @property
    def current_lambda(self):
        """λ used by the most recent training call (or the next inference)."""
        return self.lambda_at(self.iteration)

    def forward(self, cos, label, lam=None):
        if lam is None:
            if not isinstance(cos, mx.nd.NDArray):
                raise TypeError("SphereFaceLoss inside a hybridized parent needs "
                                "lam (a (1,) array holding lambda) as third input")
            if autograd.is_training():
                self.iteration += 1
            lam = mx.nd.array([self.current_lambda], ctx=cos.context,
                              dtype=_compute_dtype(cos.dtype))
        return super().forward(cos, label, lam)

    def _target(self, F, cos_y, lam):
        m_theta = self._theta(F, cos_y) * self._m
        k = F.floor(m_theta / math.pi)            # zero gradient: piecewise constant
        sign = 1.0 - 2.0 * (k - 2.0 * F.floor(k / 2.0))   # (-1)^k
        psi = sign * F.cos(m_theta) - 2.0 * k
        return F.broadcast_div(F.broadcast_mul(cos_y, lam) + psi, lam + 1.0)
