"""Losses on raw embeddings that hold their own classifier: L2-Softmax and the
large-margin Gaussian Mixture (L-GM) loss, and the plumbing every loss on raw
embeddings with class parameters shares (:class:`_EmbeddingLoss`: widening,
input checks, ``in_units=0``).

They follow the convention of :mod:`fr_lib.loss.regularizer` (read its module
docstring), where they are importable as well.

Registered names: ``l2softmax``, ``lgm``.
"""
import math

import mxnet as mx
from mxnet import init
from mxnet.gluon import HybridBlock, nn

from . import register_loss
from ..utils.checks import check_int, check_labels, compute_dtype as _compute_dtype

__all__ = ["L2SoftmaxLoss", "LGMLoss", "l2softmax_alpha_lower_bound"]


def _check_inputs(embeddings, label, num_classes, dim):
    """Imperative-only checks of the convention; returns the labels on the
    host as a flat NumPy array (None when ``label`` is None)."""
    if embeddings.ndim != 2:
        raise ValueError(f"expected embeddings of shape (batch, dim), got shape "
                         f"{embeddings.shape}")
    if dim and embeddings.shape[1] != dim:
        raise ValueError(f"embeddings have dimension {embeddings.shape[1]}, but the "
                         f"loss was built for in_units={dim}")
    if label is None:
        return None
    return check_labels(label, num_classes, embeddings.shape[0])


class _EmbeddingLoss(HybridBlock):
    """Shared plumbing: dtype widening, input checks and filling in the
    embedding size of parameters created with ``in_units=0``."""

    def __init__(self, num_classes, in_units, **kwargs):
        super().__init__(**kwargs)
        self._num_classes = check_int("num_classes", num_classes, 1)
        self._in_units = check_int("in_units (0: infer from the first batch)",
                                   in_units, 0)
        self._deferred = []  # parameters of shape (num_classes, in_units)

    @property
    def num_classes(self):
        """Number of classes the loss was built for."""
        return self._num_classes

    def _prepare(self, embeddings, label):
        """Widen fp16, check the inputs and fix ``in_units`` (NDArrays only)."""
        dtype = _compute_dtype(embeddings.dtype)
        if embeddings.dtype != dtype:
            embeddings = embeddings.astype(dtype)
        if label is not None and label.dtype != dtype:
            # pick/take/broadcast_equal want one dtype for labels and features
            label = label.astype(dtype)
        values = _check_inputs(embeddings, label, self._num_classes, self._in_units)
        if not self._in_units:
            # Gluon cannot infer the size of a parameter that is only read
            # through take(); the first batch tells us, before any graph exists.
            self._in_units = embeddings.shape[1]
            for param in self._deferred:
                if 0 in param.shape:
                    param.shape = (self._num_classes, self._in_units)
                    if param._deferred_init:
                        # so that data() works outside forward() as well
                        # (logits() before the first loss call)
                        param._finish_deferred_init()
        return embeddings, label, values

    def _get_deferred(self, name, **kwargs):
        param = self.params.get(name, shape=(self._num_classes, self._in_units),
                                allow_deferred_init=True, **kwargs)
        self._deferred.append(param)
        return param


def l2softmax_alpha_lower_bound(num_classes, p=0.9):
    r"""The lower bound on the L2-Softmax scale α (Ranjan et al., arXiv 1703.09507).

    Book: introduced in ``chapter_loss/normalization`` (归一化与尺度：L2-Softmax 与 NormFace).

    .. math:: \alpha_{low} = \log \frac{p\,(C - 2)}{1 - p}

    The paper derives it as the smallest feature norm α with which the
    softmax probability of the true class can still reach ``p`` among ``C``
    classes: below it the normalised features cannot be classified
    confidently, whatever the weights. The scale must grow (slowly) with the
    number of classes, e.g. ``C = 10``: 4.28; ``C = 10,575``
    (CASIA-WebFace): 11.46.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``, at least 3 (the bound is ``-inf`` for 2).
    p : float, default 0.9
        Target probability of the true class, ``0 < p < 1``.

    Returns
    -------
    float
        α_low (may be <= 0 for tiny ``C`` and small ``p``, where any scale works).
    """
    num_classes = check_int("num_classes", num_classes, 3)
    if not 0 < p < 1:
        raise ValueError(f"probability p must be in (0, 1), got {p}")
    return math.log(p * (num_classes - 2) / (1 - p))


@register_loss("l2softmax")
class L2SoftmaxLoss(_EmbeddingLoss):
    r"""L2-constrained softmax (L2-Softmax), arXiv 1703.09507.

    The feature is L2-normalised and scaled to a fixed norm α, then fed to an
    ordinary (unnormalised, learnable) fully connected layer and softmax
    cross-entropy:

    .. math:: z = \alpha \frac{x}{\sqrt{\|x\|^2 + \epsilon}},\qquad
              L = -\log \frac{e^{W_y^\top z + b_y}}{\sum_{j} e^{W_j^\top z + b_j}}

    The classifier stays an ordinary FC layer, as in the paper (weights not
    normalised; here with a bias by default, ``use_bias=False`` drops
    ``b``), so only the feature lies on the hypersphere of radius α. Without
    the bias the logits are :math:`\alpha\|W_j\|\cos\theta_j`.

    Parameters
    ----------
    num_classes : int
        Number of classes.
    alpha : float or None, default None
        Feature norm α (fixed, not learned). ``None`` uses
        :func:`l2softmax_alpha_lower_bound` ``(num_classes, p=0.9)``
        (needs ``num_classes >= 3``). The bound is a minimum: larger
        scales are common in practice (16–64 in face recognition code).
    in_units : int, default 0
        Embedding size; 0 infers it from the first batch.
    use_bias : bool, default True
        Give the FC layer a bias, as in the paper.
    eps : float, default 1e-10
        Added to ``||x||^2`` so a zero feature gives a finite loss and gradient.
    weight_initializer, bias_initializer
        Passed to the internal :class:`mxnet.gluon.nn.Dense` (``fc``).

    Inputs
    ------
    embeddings : (batch, dim)
    label : (batch,)

    Outputs
    -------
    loss : (batch,)
        Call ``initialize()`` first; :meth:`logits` gives the class scores
        for accuracy.
    """

    def __init__(self, num_classes, alpha=None, in_units=0, use_bias=True, eps=1e-10,
                 weight_initializer=None, bias_initializer="zeros", **kwargs):
        super().__init__(num_classes, in_units, **kwargs)
        if alpha is None:
            alpha = l2softmax_alpha_lower_bound(self._num_classes)
        if not alpha > 0:
            raise ValueError(f"alpha (the feature norm) must be positive, got {alpha}")
        if not 0 < eps < 1e-2:
            raise ValueError(f"eps must be in (0, 0.01), got {eps}")
        self._alpha = float(alpha)
        self._eps = float(eps)
        with self.name_scope():
            self.fc = nn.Dense(self._num_classes, use_bias=use_bias,
                               in_units=self._in_units,
                               weight_initializer=weight_initializer,
                               bias_initializer=bias_initializer)

    @property
    def alpha(self):
        """The feature norm α in use."""
        return self._alpha

    def _logits(self, F, x):
        norm = F.sqrt(F.sum(F.square(x), axis=1, keepdims=True) + self._eps)
        return self.fc(F.broadcast_div(x, norm) * self._alpha)

    def logits(self, embeddings):
        """Class scores ``W z + b`` of shape (batch, num_classes), for accuracy."""
        embeddings, _, _ = self._prepare(embeddings, None)
        return self._logits(mx.nd, embeddings)

    def forward(self, embeddings, label):
        if isinstance(embeddings, mx.nd.NDArray):
            embeddings, label, _ = self._prepare(embeddings, label)
        return super().forward(embeddings, label)

    def hybrid_forward(self, F, x, label):
        label = label.reshape((-1,))
        logp = F.log_softmax(self._logits(F, x), axis=1)
        return -F.pick(logp, label, axis=1)


@register_loss("lgm")
class LGMLoss(_EmbeddingLoss):
    r"""Large-margin Gaussian Mixture loss (L-GM), Wan et al., arXiv 1803.02988.

    The features of class k are modelled as a Gaussian :math:`N(\mu_k,
    \Lambda_k)` with equal priors. With the Mahalanobis term

    .. math:: d_k = \tfrac12 (x - \mu_k)^\top \Lambda_k^{-1} (x - \mu_k)

    the classification loss is softmax cross-entropy over the logits
    :math:`-(1 + \alpha [k = y])\, d_k - \tfrac12 \log|\Lambda_k|`: the
    true class's distance is enlarged by the margin α, the log-determinant is
    not. The likelihood regulariser is the negative log-likelihood of the
    feature under its own class (constant dropped), and the per-sample loss is

    .. math:: \ell_i = L_{cls,i} + \lambda\,\bigl(d_{y_i} + \tfrac12\log|\Lambda_{y_i}|\bigr)

    (the paper's :math:`L_{GM} = L_{cls} + \lambda L_{lkd}`; the mean over the
    batch gives the official code's averaging). With
    ``covariance='identity'`` :math:`\Lambda_k = I`, the log-determinant
    vanishes and :math:`d_k = \tfrac12\|x - \mu_k\|^2`, as in the authors'
    TensorFlow release. With ``covariance='diagonal'``
    :math:`\Lambda_k = \mathrm{diag}(e^{v_k})` is learned through the
    log-variances ``v_k`` (Parameter ``log_var``, starting at 0, i.e.
    identity), which keeps the variances positive. Beware: the likelihood
    term rewards shrinking variances (``log|Λ|`` has no lower bound), so with
    a large λ or learning rate the variances can collapse; the authors'
    Caffe layer can freeze them (``update_sigma: false``), which is
    ``covariance='identity'`` here.

    The margin is part of the loss in every mode (it is a training
    objective); :meth:`logits` returns the margin-free logits for accuracy
    and for likelihood-based outlier scores.

    Distances are computed as ``x^T A x - 2 x^T A mu + mu^T A mu`` with
    matrix products (O(batch * classes * dim) time, no (batch, classes, dim)
    temporary), like the official code; this loses a little relative
    precision when ``x`` is very close to ``mu`` compared with their norms.

    Parameters
    ----------
    num_classes : int
        Number of classes.
    in_units : int, default 0
        Embedding size; 0 infers it from the first batch.
    alpha : float, default 0.1
        Margin α >= 0 (the value in the authors' code; the example schedule in
        their README grows it from 0.1 to 0.3 during training).
    lambda_lkd : float, default 0.01
        Weight λ >= 0 of the likelihood regulariser (the official TensorFlow
        code's value).
    covariance : {'identity', 'diagonal'}, default 'identity'
        Fixed identity or learned diagonal covariances.
    means_initializer : str or Initializer, default Xavier()
        Initial class means (Parameter ``means``, shape (num_classes, dim)).

    Inputs
    ------
    embeddings : (batch, dim)
    label : (batch,)

    Outputs
    -------
    loss : (batch,)
        Call ``initialize()`` first.
    """

    def __init__(self, num_classes, in_units=0, alpha=0.1, lambda_lkd=0.01,
                 covariance="identity", means_initializer=None, **kwargs):
        super().__init__(num_classes, in_units, **kwargs)
        if not alpha >= 0:
            raise ValueError(f"margin alpha must be >= 0, got {alpha}")
        if not lambda_lkd >= 0:
            raise ValueError(f"lambda_lkd must be >= 0, got {lambda_lkd}")
        if covariance not in ("identity", "diagonal"):
            raise ValueError(f"covariance must be 'identity' or 'diagonal', "
                             f"got {covariance!r}")
        self._alpha, self._lambda = float(alpha), float(lambda_lkd)
        self._covariance = covariance
        with self.name_scope():
            self.means = self._get_deferred("means", init=means_initializer or init.Xavier())
            self.log_var = (self._get_deferred("log_var", init="zeros")
                            if covariance == "diagonal" else None)

    def _terms(self, F, x, means, log_var):
        """Mahalanobis terms d (batch, C) and ½log|Λ_k| (C,) or None."""
        fc = dict(no_bias=True, num_hidden=self._num_classes)
        if log_var is None:
            xx = F.sum(F.square(x), axis=1, keepdims=True)
            xm = F.FullyConnected(x, means, **fc)
            mm = F.sum(F.square(means), axis=1).reshape((1, -1))
            return 0.5 * F.broadcast_add(F.broadcast_sub(xx, 2 * xm), mm), None
        inv_var = F.exp(-log_var)
        xx = F.FullyConnected(F.square(x), inv_var, **fc)
        xm = F.FullyConnected(x, means * inv_var, **fc)
        mm = F.sum(F.square(means) * inv_var, axis=1).reshape((1, -1))
        half_logdet = 0.5 * F.sum(log_var, axis=1)
        return 0.5 * F.broadcast_add(xx - 2 * xm, mm), half_logdet

    def _plain_logits(self, F, d, half_logdet):
        if half_logdet is None:
            return -d
        return F.broadcast_sub(-d, half_logdet.reshape((1, -1)))

    def logits(self, embeddings):
        """Margin-free logits ``-d_k - ½log|Λ_k|`` of shape (batch, num_classes):
        the log-posterior up to a per-row constant (argmax = prediction)."""
        embeddings, _, _ = self._prepare(embeddings, None)
        ctx = embeddings.context
        log_var = self.log_var.data(ctx) if self.log_var is not None else None
        d, half_logdet = self._terms(mx.nd, embeddings, self.means.data(ctx), log_var)
        return self._plain_logits(mx.nd, d, half_logdet)

    def forward(self, embeddings, label):
        if isinstance(embeddings, mx.nd.NDArray):
            embeddings, label, _ = self._prepare(embeddings, label)
        return super().forward(embeddings, label)

    def hybrid_forward(self, F, x, label, means, log_var=None):
        label = label.reshape((-1,))
        d, half_logdet = self._terms(F, x, means, log_var)
        mask = F.broadcast_equal(F.contrib.arange_like(d, axis=1).reshape((1, -1)),
                                 label.reshape((-1, 1)))
        logits = self._plain_logits(F, d + self._alpha * mask * d, half_logdet)
        ce = -F.pick(F.log_softmax(logits, axis=1), label, axis=1)
        nll = F.pick(d, label, axis=1)
        if half_logdet is not None:
            nll = nll + F.take(half_logdet, label)
        return ce + self._lambda * nll
