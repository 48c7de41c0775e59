"""Losses on raw embeddings used with (or instead of) softmax: L2-Softmax,
Center loss, Ring loss and the large-margin Gaussian Mixture (L-GM) loss.

The convention (all losses in this module)
------------------------------------------
Input
    ``embeddings``: raw, unnormalised features of shape ``(batch, dim)``,
    straight from the backbone; ``label``: integer class ids of shape
    ``(batch,)`` (or ``(batch, 1)``), given as any numeric dtype.
    :class:`RingLoss` needs no labels (``label`` is accepted and ignored).
Output
    The per-sample loss, shape ``(batch,)``. Average it yourself
    (``loss(embeddings, label).mean()``), like ``gluon.loss`` losses.
Parameters
    Unlike the margin losses, every loss here owns learnable state (an FC
    layer, class centres, a radius, Gaussian means and variances) held as
    gluon ``Parameter`` objects: call ``loss.initialize()`` (and
    ``loss.cast('float64')`` for float64 input) before the first call and
    pass ``loss.collect_params()`` to your ``gluon.Trainer`` together with
    the network's parameters (for example
    ``net.collect_params().update(loss.collect_params())``). With
    ``in_units=0`` the embedding size is taken from the first batch.
Errors
    Called with NDArrays (directly, hybridized or not), a wrong shape, a
    non-integer label or a label outside ``[0, num_classes)`` raises
    :class:`ValueError` naming the bad label and the number of classes
    (this copies the labels to the host once per call). Inside another
    hybridized block (symbols instead of NDArrays) nothing is checked and
    ``pick``/``take`` silently clip out-of-range labels.
Precision
    float16 embeddings (AMP on GPU) are computed in float32 and the loss is
    returned in float32; float32 and float64 are computed in their own type
    (the parameters must have that type too).

Registered names: ``l2softmax``, ``center``, ``ring``, ``lgm``.
"""
import math

import numpy as np
import mxnet as mx
from mxnet import autograd, init
from mxnet.gluon import HybridBlock, nn

from . import register_loss

__all__ = ["L2SoftmaxLoss", "CenterLoss", "RingLoss", "LGMLoss",
           "l2softmax_alpha_lower_bound"]


def _compute_dtype(dtype):
    # fp16 has a 1e-3 resolution and squares of feature norms overflow it
    # quickly, so half-precision input is widened before any arithmetic.
    return np.float32 if np.dtype(dtype) == np.float16 else np.dtype(dtype).type


def _check_num_classes(num_classes, minimum=1):
    if int(num_classes) != num_classes or num_classes < minimum:
        raise ValueError(f"num_classes must be an integer >= {minimum}, got {num_classes}")
    return int(num_classes)


def _check_in_units(in_units):
    if int(in_units) != in_units or in_units < 0:
        raise ValueError(f"in_units must be an integer >= 0 (0: infer from the "
                         f"first batch), got {in_units}")
    return int(in_units)


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
    batch = embeddings.shape[0]
    if label.size != batch:
        raise ValueError(f"expected {batch} labels (one per embedding), got shape "
                         f"{label.shape}")
    values = label.asnumpy().reshape(-1)
    bad = values[(values != np.floor(values)) | (values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(f"label {bad[0]:g} is out of range for {num_classes} classes: "
                         f"labels must be integers in [0, {num_classes})")
    return values


class _EmbeddingLoss(HybridBlock):
    """Shared plumbing: dtype widening, input checks and filling in the
    embedding size of parameters created with ``in_units=0``."""

    def __init__(self, num_classes, in_units, **kwargs):
        super().__init__(**kwargs)
        self._num_classes = _check_num_classes(num_classes)
        self._in_units = _check_in_units(in_units)
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
    num_classes = _check_num_classes(num_classes, minimum=3)
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


@register_loss("center")
class CenterLoss(_EmbeddingLoss):
    r"""Center loss (Wen et al., "A Discriminative Feature Learning Approach for
    Deep Face Recognition", ECCV 2016).

    One centre :math:`c_j` per class; each sample is pulled towards its own:

    .. math:: \ell_i = \tfrac12 \| x_i - c_{y_i} \|^2

    The paper's objective is :math:`L = L_S + \lambda L_C` with
    :math:`L_C = \tfrac12 \sum_{i=1}^m \|x_i - c_{y_i}\|^2` summed over the
    mini-batch; combine the per-sample outputs the same way, e.g.
    ``(softmax(logits, y) + lam * center(x, y)).mean()`` (the mean instead of
    the sum only rescales λ and the learning rate by 1/m). The paper's face
    models used λ = 0.003 and α = 0.5.

    Two ways to move the centres:

    ``update='gradient'``
        The centres are an ordinary Parameter; the Trainer updates them
        with the gradient :math:`\sum_{i: y_i = j} (c_j - x_i)` (times the
        weight you give the loss). Set ``loss.centers.lr_mult`` to give them
        their own learning rate.
    ``update='paper'``
        The paper's rule (Algorithm 1). The centres get ``grad_req='null'``
        (the Trainer leaves them alone) and every forward call in autograd
        training mode (inside ``autograd.record()``) moves them, after the
        loss has been computed with the old centres, by

        .. math:: \Delta c_j = \frac{\sum_{i: y_i = j} (c_j - x_i)}
                  {1 + \sum_{i} [y_i = j]},\qquad c_j \leftarrow c_j - \alpha\,\Delta c_j

        using the batch features without gradient; classes absent from the
        batch do not move. Call the loss once per training step. This works
        with ``hybridize()`` (the update runs on NDArrays around the cached
        graph); called inside another hybridized block, where the loss only
        sees symbols, the update cannot run and a :class:`TypeError` is
        raised -- call the loss on the network's output instead, or use
        ``update='gradient'``. With the centres on several devices the rule
        uses the copy on the batch's device and writes the new rows to every
        copy, so all copies stay identical.

    Parameters
    ----------
    num_classes : int
        Number of classes.
    in_units : int, default 0
        Embedding size; 0 infers it from the first batch (only in a direct
        call: inside a hybridized parent pass it).
    update : {'gradient', 'paper'}, default 'gradient'
        How the centres learn (see above).
    alpha : float, default 0.5
        Centre learning rate of the paper's rule, ``0 < alpha <= 1``; unused
        with ``update='gradient'``.
    center_initializer : str or Initializer, default 'zeros'
        Initial centres (zeros: every centre starts at the origin and is
        pulled to its class from the first steps on).

    Inputs
    ------
    embeddings : (batch, dim)
    label : (batch,)

    Outputs
    -------
    loss : (batch,)
        Call ``initialize()`` first.
    """

    def __init__(self, num_classes, in_units=0, update="gradient", alpha=0.5,
                 center_initializer="zeros", **kwargs):
        super().__init__(num_classes, in_units, **kwargs)
        if update not in ("gradient", "paper"):
            raise ValueError(f"update must be 'gradient' or 'paper', got {update!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"centre learning rate alpha must be in (0, 1], got {alpha}")
        self._update = update
        self._alpha = float(alpha)
        with self.name_scope():
            self.centers = self._get_deferred(
                "centers", init=center_initializer,
                grad_req="null" if update == "paper" else "write")

    @property
    def update(self):
        """'gradient' or 'paper'."""
        return self._update

    def forward(self, embeddings, label):
        if not isinstance(embeddings, mx.nd.NDArray):
            if self._update == "paper":
                raise TypeError("CenterLoss(update='paper') updates its centres "
                                "imperatively and cannot run inside a hybridized "
                                "parent block: call it on the network's output, "
                                "or use update='gradient'")
            return super().forward(embeddings, label)
        embeddings, label, values = self._prepare(embeddings, label)
        out = super().forward(embeddings, label)
        if self._update == "paper" and autograd.is_training():
            self._paper_update(embeddings, values)
        return out

    def _paper_update(self, x, labels):
        # Only the classes in the batch move, so the work is O(batch * dim)
        # whatever num_classes is (85k identities for emore).
        classes, inverse, counts = np.unique(labels.astype(np.int64),
                                             return_inverse=True, return_counts=True)
        with autograd.pause():
            ctx = x.context
            centers = self.centers.data(ctx)
            dtype = centers.dtype
            x = x.detach().astype(dtype, copy=False)
            idx = mx.nd.array(classes, ctx=ctx, dtype="int64")
            member = mx.nd.one_hot(mx.nd.array(inverse, ctx=ctx), len(classes),
                                   dtype=dtype)                    # (batch, K)
            sums = mx.nd.dot(member, x, transpose_a=True)           # sum of x_i per class
            n = mx.nd.array(counts, ctx=ctx, dtype=dtype).reshape((-1, 1))
            old = mx.nd.take(centers, idx)
            delta = (n * old - sums) / (1 + n)
            new = old - self._alpha * delta
            # The loss graph only read the centres through take(), whose
            # backward needs the indices, not the values: writing in place
            # after the forward pass leaves the pending backward intact.
            for data in self.centers.list_data():
                data[idx.as_in_context(data.context)] = new.as_in_context(data.context)

    def hybrid_forward(self, F, x, label, centers):
        label = label.reshape((-1,))
        diff = x - F.take(centers, label)
        return 0.5 * F.sum(F.square(diff), axis=1)


@register_loss("ring")
class RingLoss(HybridBlock):
    r"""Ring loss (Zheng et al., arXiv 1803.00130): a soft norm constraint
    with a learned radius R.

    .. math:: \ell_i = \tfrac12 \left(\|x_i\|_2 - R\right)^2,\qquad
              \|x\|_2 = \sqrt{\textstyle\sum_d x_d^2 + \epsilon}

    The paper's term is :math:`L_R = \frac{\lambda}{2m}\sum_{i=1}^m
    (\|x_i\|_2 - R)^2`, added to a softmax-type loss; with the per-sample
    outputs here that is ``softmax(...).mean() + lam * ring(x).mean()``.
    The gradient pulls every norm towards R and R towards the mean norm.

    Parameters
    ----------
    radius : float or 'mean', default 1.0
        Initial R. ``'mean'`` starts R at the mean feature norm of the first
        batch the loss sees (the first call on NDArrays) -- useful because
        raw feature norms can be far from 1. Until then R holds the marker
        -1; parameters loaded from a file (R >= 0) are kept as they are.
    eps : float, default 1e-12
        Added to ``||x||^2`` so a zero feature has a finite gradient.

    Inputs
    ------
    embeddings : (batch, dim)
    label : optional
        Ignored, so ``ring(x, y)`` and ``ring(x)`` both work.

    Outputs
    -------
    loss : (batch,)
        R is the Parameter ``radius`` of shape (1,): call ``initialize()``
        first and train it with the Trainer.
    """

    def __init__(self, radius=1.0, eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        if isinstance(radius, str):
            if radius != "mean":
                raise ValueError(f"radius must be a positive number or 'mean', got {radius!r}")
            start, self._pending = -1.0, True
        else:
            if not radius > 0:
                raise ValueError(f"radius must be a positive number or 'mean', got {radius}")
            start, self._pending = float(radius), False
        if not 0 < eps < 1e-2:
            raise ValueError(f"eps must be in (0, 0.01), got {eps}")
        self._eps = float(eps)
        with self.name_scope():
            self.radius = self.params.get("radius", shape=(1,), init=init.Constant(start))

    def _norm(self, F, x):
        return F.sqrt(F.sum(F.square(x), axis=1) + self._eps)

    def forward(self, embeddings, label=None):
        if not isinstance(embeddings, mx.nd.NDArray):
            if self._pending:
                raise TypeError("RingLoss(radius='mean') sets R from the first batch "
                                "and cannot do that inside a hybridized parent: "
                                "call it once on NDArrays first or pass a number")
            return super().forward(embeddings)
        dtype = _compute_dtype(embeddings.dtype)
        if embeddings.dtype != dtype:
            embeddings = embeddings.astype(dtype)
        _check_inputs(embeddings, None, 1, 0)
        if self._pending:
            radius = self.radius.data(embeddings.context)
            if radius.asscalar() < 0:  # still the marker: not loaded from a file
                # paused: R is an autograd variable, and writing to it while
                # recording is refused
                with autograd.pause():
                    mean = self._norm(mx.nd, embeddings.detach()).mean()
                    self.radius.set_data(mean.astype(radius.dtype))
            self._pending = False
        return super().forward(embeddings)

    def hybrid_forward(self, F, x, radius):
        return 0.5 * F.square(F.broadcast_sub(self._norm(F, x), radius))


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
