"""Metric-learning losses on embeddings: Contrastive and Triplet (with in-batch mining).

These losses act on the embeddings themselves rather than on class logits, so
they need no classifier head and work for any number of identities. Both
come in the form the papers use:

- :class:`ContrastiveLoss` (``contrastive``): explicit pairs ``(emb1, emb2,
  same)``, one loss per pair, shape ``(batch,)``.
- :class:`ContrastiveBatchLoss` (``contrastive_batch``) and
  :class:`TripletLoss` (``triplet``): one batch of ``embeddings`` with their
  identity ``labels``; the pairs or triplets are formed inside the batch
  (use :class:`fr_lib.data.PKSampler` to get P identities x K images per
  batch). The output is one averaged loss per batch, shape ``(1,)``.

Conventions shared by all three
-------------------------------
Distances
    ``d(a, b) = sqrt(||a - b||^2 + eps)`` with ``eps=1e-12``: the eps keeps
    the gradient ``(a - b) / d`` finite when two embeddings coincide (the
    derivative of a bare square root is infinite at 0). It moves a distance
    by at most ``sqrt(eps) = 1e-6``. Squared distances are used as they are,
    without eps. Inside a batch the squared distances come from the Gram
    matrix, ``||a||^2 + ||b||^2 - 2 a.b`` clipped at 0, which needs
    O(batch^2) memory instead of O(batch^2 * dim) for all differences.
Labels
    Any numeric dtype, shape ``(batch,)`` or ``(batch, 1)``; only equality
    matters, so identity ids need not be contiguous.
Errors
    Called imperatively, wrong shapes (and, for ``same``, values other than
    0/1) raise :class:`ValueError`. Under ``hybridize()`` the checks do not run.
Precision
    float16 input is computed in float32 (the loss is float32); float32 and
    float64 are computed in their own type.

All are ``HybridBlock`` s without parameters (no ``initialize()`` needed).
"""
import numpy as np
import mxnet as mx
from mxnet.gluon import HybridBlock

from . import register_loss
from ..utils.checks import compute_dtype as _compute_dtype
from ..model_zoo.layers import l2_normalize_rows

__all__ = ["ContrastiveLoss", "ContrastiveBatchLoss", "TripletLoss"]

_MINING = ("all", "hard", "semihard")
_AVERAGE = ("all", "nonzero")


def _cast(*arrays):
    """Widen fp16 and give every input the dtype of the first one."""
    dtype = _compute_dtype(arrays[0].dtype)
    return [a if a.dtype == dtype else a.astype(dtype) for a in arrays]


def _check_margin(margin):
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return float(margin)


def _check_eps(eps):
    if not 0 < eps < 1e-2:
        raise ValueError(f"eps must be in (0, 0.01), got {eps}")
    return float(eps)


def _check_batch(emb, labels, name="labels"):
    """Imperative-only shape checks for the batch losses."""
    if emb.ndim != 2:
        raise ValueError(f"expected embeddings of shape (batch, dim), got shape {emb.shape}")
    if labels.size != emb.shape[0] or labels.ndim > 2:
        raise ValueError(f"expected {emb.shape[0]} {name} (one per embedding), "
                         f"got shape {labels.shape}")


def _squared_distances(F, emb):
    """(batch, batch) squared Euclidean distances via the Gram matrix."""
    sq = F.sum(F.square(emb), axis=1)
    gram = F.dot(emb, emb, transpose_b=True)
    # clipped at 0: rounding can make ||a||^2 + ||b||^2 - 2ab slightly negative
    return F.relu(F.broadcast_add(sq.reshape((-1, 1)), sq.reshape((1, -1))) - 2 * gram)


def _label_masks(F, emb, labels):
    """Float masks (batch, batch): ``pos`` same label and i != j, ``neg``
    different label. Built with broadcast ops so they hybridize."""
    labels = labels.reshape((-1,))
    same = F.broadcast_equal(labels.reshape((-1, 1)), labels.reshape((1, -1)))
    index = F.contrib.arange_like(emb, axis=0)
    eye = F.broadcast_equal(index.reshape((-1, 1)), index.reshape((1, -1)))
    return same - eye, 1 - same


@register_loss("contrastive")
class ContrastiveLoss(HybridBlock):
    r"""Contrastive loss on explicit pairs (Hadsell, Chopra, LeCun, CVPR 2006,
    "Dimensionality Reduction by Learning an Invariant Mapping").

    .. math:: L = y\,\frac{d^2}{2} + (1 - y)\,\frac{\max(0, m - d)^2}{2},
              \qquad d = \lVert a - b \rVert_2

    with ``y = 1`` for a genuine pair (same identity) and ``y = 0`` for an
    impostor. Genuine pairs are pulled together; impostors are pushed apart
    until they are ``m`` away and then left alone. ``d`` is the Euclidean
    distance itself (gluon-face used the norm of the squared differences,
    a different function). ``d^2`` is the exact squared distance and the
    ``eps`` of the module docstring enters only ``d``.

    Parameters
    ----------
    margin : float, default 1.0
        ``m``: impostor pairs farther apart than this cost nothing.
    normalize : bool, default False
        L2-normalise both embeddings first (then ``d`` lies in [0, 2] and
        ``d^2 = 2 - 2 cos``).
    eps : float, default 1e-12
        Added under the square roots of ``d`` and of the normalisation.

    Inputs
    ------
    emb1, emb2 : (batch, dim)
        The two sides of each pair.
    same : (batch,) or (batch, 1)
        1 for a genuine pair, 0 for an impostor pair.

    Outputs
    -------
    loss : (batch,)
        The loss of each pair; average it yourself.
    """

    def __init__(self, margin=1.0, normalize=False, eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        self._margin = _check_margin(margin)
        self._normalize = bool(normalize)
        self._eps = _check_eps(eps)

    def forward(self, emb1, emb2, same):
        if isinstance(emb1, mx.nd.NDArray):
            if emb1.ndim != 2 or emb1.shape != emb2.shape:
                raise ValueError(f"expected emb1 and emb2 of the same shape (batch, dim), "
                                 f"got {emb1.shape} and {emb2.shape}")
            _check_batch(emb1, same, name="pair labels `same`")
            values = np.unique(same.asnumpy())
            bad = values[(values != 0) & (values != 1)]
            if bad.size:
                raise ValueError(f"same must be 1 (genuine pair) or 0 (impostor pair), "
                                 f"got {bad[0]:g}")
            emb1, emb2, same = _cast(emb1, emb2, same)
        return super().forward(emb1, emb2, same)

    def hybrid_forward(self, F, emb1, emb2, same):
        if self._normalize:
            emb1 = l2_normalize_rows(F, emb1, self._eps)
            emb2 = l2_normalize_rows(F, emb2, self._eps)
        same = same.reshape((-1,))
        sq = F.sum(F.square(emb1 - emb2), axis=1)
        d = F.sqrt(sq + self._eps)
        return same * sq / 2 + (1 - same) * F.square(F.relu(self._margin - d)) / 2


@register_loss("contrastive_batch")
class ContrastiveBatchLoss(HybridBlock):
    r"""Contrastive loss over every pair of a batch (Hadsell et al., CVPR 2006).

    Each unordered pair ``i < j`` of the batch is a genuine pair when
    ``labels[i] == labels[j]`` and an impostor pair otherwise, and costs the
    :class:`ContrastiveLoss` of that pair. A batch of ``n`` embeddings has
    ``n(n-1)/2`` pairs; a P x K batch has ``P·K(K-1)/2`` genuine ones and
    ``K^2·P(P-1)/2`` impostors, so impostors dominate as P grows.

    Parameters
    ----------
    margin : float, default 1.0
        Impostor pairs farther apart than this cost nothing.
    normalize : bool, default False
        L2-normalise the embeddings first.
    balanced : bool, default False
        How the pair losses are averaged. ``False``: the mean over all
        ``n(n-1)/2`` pairs. ``True``: the mean over genuine pairs plus the
        mean over impostor pairs, divided by the number of kinds present
        (so a kind that is absent from the batch is left out rather than
        counted as zero), which gives both kinds equal weight.
    eps : float, default 1e-12
        Added under the square roots.

    Inputs
    ------
    embeddings : (batch, dim)
    labels : (batch,) or (batch, 1)

    Outputs
    -------
    loss : (1,)
        The averaged loss; 0 for a batch of one sample.
    """

    def __init__(self, margin=1.0, normalize=False, balanced=False, eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        self._margin = _check_margin(margin)
        self._normalize = bool(normalize)
        self._balanced = bool(balanced)
        self._eps = _check_eps(eps)

    def forward(self, embeddings, labels):
        if isinstance(embeddings, mx.nd.NDArray):
            _check_batch(embeddings, labels)
            embeddings, labels = _cast(embeddings, labels)
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels):
        if self._normalize:
            embeddings = l2_normalize_rows(F, embeddings, self._eps)
        sq = _squared_distances(F, embeddings)
        pos, neg = _label_masks(F, embeddings, labels)
        genuine = pos * sq / 2
        impostor = neg * F.square(F.relu(self._margin - F.sqrt(sq + self._eps))) / 2
        # Sums run over ordered pairs (i, j), i != j: each unordered pair twice,
        # which cancels between numerator and denominator.
        if not self._balanced:
            return F.sum(genuine + impostor) / F.maximum(F.sum(pos + neg), 1.0)
        n_pos, n_neg = F.sum(pos), F.sum(neg)
        kinds = F.maximum((n_pos > 0) + (n_neg > 0), 1.0)
        return (F.sum(genuine) / F.maximum(n_pos, 1.0)
                + F.sum(impostor) / F.maximum(n_neg, 1.0)) / kinds


@register_loss("triplet")
class TripletLoss(HybridBlock):
    r"""Triplet loss with in-batch mining (FaceNet, arXiv 1503.03832; batch
    hard and batch all from "In Defense of the Triplet Loss", arXiv 1703.07737).

    .. math:: \ell(a, p, n) = \max(0,\; D(a, p) - D(a, n) + m)

    for an anchor ``a``, a positive ``p != a`` with the same label and a
    negative ``n`` with a different label. ``D`` is the squared Euclidean
    distance (FaceNet) or, with ``squared=False``, the distance itself.
    Anchors without any positive or without any negative in the batch form
    no triplet and are left out.

    Mining
    ------
    Which triplets the batch contributes:

    ``'all'`` (batch all)
        Every valid triplet ``(a, p, n)`` of the batch: ``n_pos·n_neg`` per
        anchor. Memory O(batch^3).
    ``'hard'`` (batch hard, Hermans et al.)
        One triplet per anchor: its farthest positive and its nearest
        negative. Memory O(batch^2).
    ``'semihard'`` (FaceNet)
        One triplet per positive pair ``(a, p)``: the negative with the
        smallest ``D(a, n)`` among those with ``D(a, n) > D(a, p)`` (the
        semi-hard ones, ``D(a,p) < D(a,n) < D(a,p) + m``, if there are any;
        otherwise the nearest of the easy ones beyond the margin, whose
        loss is 0). When every negative is closer than the positive
        (``D(a, n) <= D(a, p)``), the easiest negative, the one with the
        largest ``D(a, n)``, is used, as TensorFlow Addons does; this avoids
        the collapse that the hardest negative can cause early in training.
        Memory O(batch^3).

    Averaging
    ---------
    The loss is the sum of the hinge values of the mined terms (triplets for
    ``'all'``, anchors for ``'hard'``, positive pairs for ``'semihard'``)
    divided by a count: ``average='all'`` counts every mined term,
    ``average='nonzero'`` only the active ones (hinge > 0). The default
    ``None`` means ``'nonzero'`` for ``mining='all'`` (otherwise the many
    easy triplets dilute the loss as training proceeds, arXiv 1703.07737)
    and ``'all'`` for ``'hard'`` and ``'semihard'`` (the papers' means). The
    count is taken as at least 1, so a batch without any term, such as a
    batch of one identity, gives 0, not NaN.

    Parameters
    ----------
    margin : float, default 0.2
        ``m`` (FaceNet's alpha = 0.2, on L2-normalised embeddings).
    mining : {'all', 'hard', 'semihard'}, default 'all'
        See above.
    average : {None, 'all', 'nonzero'}, default None
        See above.
    squared : bool, default True
        Use squared distances (FaceNet); ``False`` uses Euclidean distances
        (Hermans et al. found them more stable for batch hard).
    normalize : bool, default False
        L2-normalise the embeddings first (FaceNet constrains them to the
        unit hypersphere; pass True unless your network already does).
    return_fraction : bool, default False
        Also return the fraction of active terms, ``active / mined`` (0 when
        nothing is mined), shape ``(1,)``: a cheap view of how many triplets
        still teach something, which falls as training proceeds.
    eps : float, default 1e-12
        Added under the square roots.

    Inputs
    ------
    embeddings : (batch, dim)
    labels : (batch,) or (batch, 1)

    Outputs
    -------
    loss : (1,)
    fraction : (1,)
        Only with ``return_fraction=True``: the output is then the tuple
        ``(loss, fraction)``.
    """

    def __init__(self, margin=0.2, mining="all", average=None, squared=True,
                 normalize=False, return_fraction=False, eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        if mining not in _MINING:
            raise ValueError(f"mining must be one of {_MINING}, got {mining!r}")
        if average is None:
            average = "nonzero" if mining == "all" else "all"
        if average not in _AVERAGE:
            raise ValueError(f"average must be one of {_AVERAGE} or None, got {average!r}")
        self._margin = _check_margin(margin)
        self._mining, self._average = mining, average
        self._squared, self._normalize = bool(squared), bool(normalize)
        self._return_fraction = bool(return_fraction)
        self._eps = _check_eps(eps)

    @property
    def mining(self):
        """The mining mode, ``'all'``, ``'hard'`` or ``'semihard'``."""
        return self._mining

    @property
    def average(self):
        """The averaging actually used, ``'all'`` or ``'nonzero'``."""
        return self._average

    def forward(self, embeddings, labels):
        if isinstance(embeddings, mx.nd.NDArray):
            _check_batch(embeddings, labels)
            embeddings, labels = _cast(embeddings, labels)
        return super().forward(embeddings, labels)

    def hybrid_forward(self, F, embeddings, labels):
        if self._normalize:
            embeddings = l2_normalize_rows(F, embeddings, self._eps)
        dist = _squared_distances(F, embeddings)
        if not self._squared:
            dist = F.sqrt(dist + self._eps)
        pos, neg = _label_masks(F, embeddings, labels)
        mine = {"all": self._batch_all, "hard": self._batch_hard,
                "semihard": self._semihard}[self._mining]
        terms, valid = mine(F, dist, pos, neg)
        active = (terms > 0) * valid
        count = F.sum(active) if self._average == "nonzero" else F.sum(valid)
        loss = F.sum(terms) / F.maximum(count, 1.0)
        if self._return_fraction:
            return loss, F.sum(active) / F.maximum(F.sum(valid), 1.0)
        return loss

    def _batch_all(self, F, dist, pos, neg):
        # (a, p, n) cube: axis 1 the positive, axis 2 the negative
        d_ap, d_an = dist.expand_dims(2), dist.expand_dims(1)
        valid = F.broadcast_mul(pos.expand_dims(2), neg.expand_dims(1))
        terms = F.relu(F.broadcast_sub(d_ap, d_an) + self._margin) * valid
        return terms, valid

    def _batch_hard(self, F, dist, pos, neg):
        # Indices (argmax/argmin, no gradient) then pick: the gradient goes to
        # exactly one positive and one negative per anchor, even with ties.
        fixed = F.BlockGrad(dist)
        hardest_pos = F.argmax(F.where(pos, fixed, -F.ones_like(fixed)), axis=1)
        # masked entries are pushed above every real negative of their row
        beyond = F.broadcast_mul(1 - neg, F.max(fixed, axis=1, keepdims=True) + 1)
        hardest_neg = F.argmin(fixed + beyond, axis=1)
        d_ap = F.pick(dist, hardest_pos, axis=1)
        d_an = F.pick(dist, hardest_neg, axis=1)
        valid = (F.sum(pos, axis=1) > 0) * (F.sum(neg, axis=1) > 0)
        return F.relu(d_ap - d_an + self._margin) * valid, valid

    def _semihard(self, F, dist, pos, neg):
        fixed = F.BlockGrad(dist)
        d_ap = fixed.expand_dims(2)                                 # (a, p, 1)
        d_an = F.broadcast_add(fixed.expand_dims(1), F.zeros_like(d_ap))  # (a, p, n)
        neg3 = F.broadcast_like(neg.expand_dims(1), d_an)
        outside = F.broadcast_greater(d_an, d_ap) * neg3     # D(a,n) > D(a,p)
        has_outside = F.max(outside, axis=2)
        big = F.max(fixed, axis=1, keepdims=True).expand_dims(2) + 1
        nearest_outside = F.argmin(d_an + F.broadcast_mul(1 - outside, big), axis=2)
        easiest = F.argmax(F.where(neg3, d_an, -F.ones_like(d_an)), axis=2)
        chosen = F.where(has_outside, nearest_outside, easiest)
        # pick from the differentiable cube so the gradient reaches D(a, n)
        cube = F.broadcast_add(dist.expand_dims(1), F.zeros_like(d_ap))
        d_chosen = F.pick(cube, chosen, axis=2)
        valid = F.broadcast_mul(pos, (F.sum(neg, axis=1, keepdims=True) > 0))
        return F.relu(dist - d_chosen + self._margin) * valid, valid
