"""The loss side of Partial FC: the margin loss it is built with, how its
softmax spans the shards ('sharded' or 'joined') and the sharded form itself.
"""
import numpy as np
import mxnet as mx
from mxnet import autograd


def _make_loss(loss, loss_kwargs):
    from ...loss import get_loss
    from ...loss.advanced import SubCenterArcFaceLoss
    if isinstance(loss, str):
        loss = get_loss(loss, **loss_kwargs)
    elif loss_kwargs:
        raise ValueError(f"loss keyword arguments {sorted(loss_kwargs)} need a "
                         "loss name, not a loss block")
    if isinstance(loss, SubCenterArcFaceLoss):
        raise ValueError("Sub-center ArcFace needs k centres per class; "
                         "PartialFC samples one centre per class")
    return loss


def _softmax_mode(mode, loss, num_shards):
    from ...loss.margin import _MarginSoftmaxLoss
    if mode not in ("auto", "sharded", "joined"):
        raise ValueError(f"softmax must be 'auto', 'sharded' or 'joined', got {mode!r}")
    # losses that change only the true-class logit, through _target
    # (judged on the MXNet class of a loss converted by fr_lib.native)
    cls = getattr(type(loss), "_fr_mxnet_class", type(loss))
    target_only = isinstance(loss, _MarginSoftmaxLoss) and \
        cls.forward is _MarginSoftmaxLoss.forward and \
        cls.hybrid_forward is _MarginSoftmaxLoss.hybrid_forward
    if mode == "sharded" and not target_only:
        raise ValueError(f"softmax='sharded' needs a loss that changes only the "
                         f"true-class logit; {cls.__name__} does not: use 'joined'")
    if mode == "auto":
        mode = "sharded" if target_only and num_shards > 1 else "joined"
    return mode


def _sharded_loss(loss, cosines, sample, home, *extra):
    """The margin softmax loss of ``loss`` from per-shard log-sum-exps (see the
    Notes of :class:`PartialFC`): only ``(batch,)`` vectors leave the shards."""
    scale = loss._s
    # float16 cosines (AMP) are promoted, as the losses do
    cosines = [c if c.dtype in (np.float32, np.float64) else c.astype("float32")
               for c in cosines]
    offsets = np.cumsum([0] + [c.shape[1] for c in cosines])
    owned, cols = [], []
    cos_y = None
    for s, cos in enumerate(cosines):
        col = sample.label - offsets[s]
        mine = (col >= 0) & (col < cos.shape[1])
        owned.append(mine)
        cols.append(np.where(mine, col, 0))
        with autograd.pause():
            c_idx = mx.nd.array(cols[s], ctx=cos.context, dtype=cos.dtype)
            mask = mx.nd.array(mine, ctx=home, dtype=cos.dtype)
        picked = mx.nd.pick(cos, c_idx, axis=1).as_in_context(home) * mask
        cos_y = picked if cos_y is None else cos_y + picked
    target = loss._target(mx.nd, cos_y, *extra)
    if target is None:              # NormFace: no margin
        target = cos_y
    lses = []
    for s, cos in enumerate(cosines):
        z = cos * scale
        if owned[s].any():
            rows = np.flatnonzero(owned[s])
            with autograd.pause():
                flat = mx.nd.array(rows * cos.shape[1] + cols[s][rows], ctx=cos.context,
                                   dtype="int64")
                sel = mx.nd.array(rows, ctx=home, dtype="int64")
            t = mx.nd.take(target, sel).as_in_context(cos.context) * scale
            z = mx.nd.contrib.index_copy(z.reshape((-1, 1)), flat,
                                         t.reshape((-1, 1))).reshape(z.shape)
        with autograd.pause():
            top = mx.nd.max(z, axis=1)   # any constant per row: no gradient needed
        lse = mx.nd.log(mx.nd.sum(mx.nd.exp(mx.nd.broadcast_sub(
            z, top.reshape((-1, 1)))), axis=1)) + top
        lses.append(lse.as_in_context(home))
    stacked = mx.nd.stack(*lses, axis=0)
    with autograd.pause():
        top = mx.nd.max(stacked, axis=0)
    total = mx.nd.log(mx.nd.sum(mx.nd.exp(mx.nd.broadcast_sub(
        stacked, top.reshape((1, -1)))), axis=0)) + top
    return total - target * scale
