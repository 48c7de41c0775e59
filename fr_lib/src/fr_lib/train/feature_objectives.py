"""The objectives of the loss chapter: what each loss needs around LeNet++
(a head, a P×K sampler, a softmax term it is added to) and how to predict a
class for the accuracy figure, built from the loss contracts through the
objective layer (:mod:`fr_lib.train.objective`); trained by
:func:`fr_lib.train.features.train_features`. Importable from
:mod:`fr_lib.train.features` as well.
"""
from dataclasses import dataclass

from mxnet import gluon

from ..loss import contract_of, get_loss_list
from . import objective as _layer

__all__ = ["Objective", "build_objective", "OBJECTIVES"]

# Losses on the cosine matrix of a NormDense head, and the regularisers added
# to softmax with a weight (Center, Ring), read from their contracts
# (fr_lib.loss.LossContract).
_COSINE = {n for n in get_loss_list() if contract_of(n).consumes == "cosines"}
_REGULARISERS = {n for n in get_loss_list()
                 if contract_of(n).regularizer_weight is not None}
OBJECTIVES = sorted({"softmax", "l2softmax", "lgm", "contrastive", "triplet"}
                    | _COSINE | _REGULARISERS)


@dataclass
class Objective:
    """What one loss needs around the backbone.

    Attributes
    ----------
    name : str
    blocks : list of Block
        Every block the loss uses besides the backbone (heads, losses,
        centres), trained with it by :func:`train_features`.
    loss_fn : callable
        ``loss_fn(embeddings, y) -> scalar NDArray`` (already averaged).
    predict_fn : callable or None
        ``predict_fn(embeddings) -> class scores (N, C)``; None means nearest
        class mean of the training embeddings (metric-learning losses).
    pk : bool
        Whether batches must come from a P×K sampler.
    description : str
    training : fr_lib.train.objective.Objective
        Head, loss, extra inputs and running state as the training loop
        (:class:`~fr_lib.train.trainer.FaceTrainer`) takes them, built from the
        loss's contract; its blocks are ``blocks``.
    """
    name: str
    blocks: list
    loss_fn: object
    predict_fn: object = None
    pk: bool = False
    description: str = ""
    training: object = None


class _Identity(gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return x


def _mean_loss(training):
    """``loss_fn(e, y)`` of a training objective: its step on embeddings
    (an identity backbone), averaged over the batch."""
    step = training.make_step(_Identity())

    def loss_fn(e, y):
        out = step(e, y, *training.inputs(e.context, 0))
        return training.split([out])[0][0].mean()
    return loss_fn


def build_objective(name, num_classes=10, weight=None, **loss_kwargs):
    """An :class:`Objective` for a registered loss name.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Head, loss, extra inputs (embedding norms, λ) and running state (t, μ,
    σ) come from the loss's contract through the objective layer
    (:class:`fr_lib.train.objective.Objective`), as in ``fr-train``; the
    regularisers ``'center'`` and ``'ring'`` are softmax plus the weighted
    regulariser (:class:`fr_lib.train.objective.RegularisedObjective`, as
    ``fr-train`` trains them), ``'contrastive'`` is ``contrastive_batch``
    (every pair of a P×K batch).

    Parameters
    ----------
    name : str
        One of :data:`OBJECTIVES`.
    num_classes : int
    weight : float, optional
        For ``'center'``/``'ring'``: λ in ``softmax + λ·regulariser``
        (default: the contract's, 0.1 and 0.01; ``TrainConfig.
        regularizer_weight`` in ``fr-train``).
    **loss_kwargs
        Passed to :func:`fr_lib.loss.get_loss` (e.g. ``s=10, m=0.2``).
    """
    key = name.lower()
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {OBJECTIVES}")
    if key in _REGULARISERS:
        t = _layer.Objective(key, loss_kwargs, num_classes, regularizer_weight=weight)
        base = t.base
        return Objective(key, [base.head, base.loss, t.loss], _mean_loss(t), base.head,
                         description=f"softmax + {t.weight:g}·{key}", training=t)
    if weight is not None:
        raise ValueError(f"weight is λ of a regulariser ({sorted(_REGULARISERS)}); "
                         f"{name!r} is not one")
    pk = key in ("contrastive", "triplet")
    t = _layer.Objective("contrastive_batch" if key == "contrastive" else key,
                         loss_kwargs, num_classes, pk=pk)
    blocks = [t.head, t.loss] if t.has_head else [t.loss]
    if key == "softmax":
        return Objective(key, blocks, _mean_loss(t), t.head,
                         description="FC + softmax", training=t)
    if key in ("l2softmax", "lgm"):
        return Objective(key, blocks, _mean_loss(t), t.loss.logits,
                         description=key, training=t)
    if pk:
        what = "contrastive (all pairs of a P×K batch)" if key == "contrastive" \
            else "triplet (P×K batch)"
        return Objective(key, blocks, _mean_loss(t), None, pk=True,
                         description=what, training=t)
    # cosine losses: NormDense head, k columns per class for sub-centres
    arg = t.contract.head_k_arg
    head, k = t.head, int(_layer._argument(key, loss_kwargs, arg)) if arg else 1

    def predict(e):
        cos = head(e)
        return cos.reshape((0, num_classes, k)).max(axis=2) if k > 1 else cos
    return Objective(key, blocks, _mean_loss(t), predict,
                     description=f"NormDense + {key}", training=t)
