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

Registered names: ``center``, ``ring`` (defined here: the regularisers, added
to a classification loss) and ``l2softmax``, ``lgm`` (classifiers on raw
embeddings, defined in :mod:`fr_lib.loss.embedding` and importable here).
"""
import numpy as np
import mxnet as mx
from mxnet import autograd, init
from mxnet.gluon import HybridBlock

from . import register_loss
from ..utils.checks import compute_dtype as _compute_dtype
# L2-Softmax, L-GM and the shared plumbing live in fr_lib.loss.embedding
from .embedding import (L2SoftmaxLoss, LGMLoss, _check_inputs, _EmbeddingLoss,
                        l2softmax_alpha_lower_bound)

__all__ = ["L2SoftmaxLoss", "CenterLoss", "RingLoss", "LGMLoss",
           "l2softmax_alpha_lower_bound"]


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
