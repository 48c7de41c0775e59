"""Pieces of graph and state the margin losses of :mod:`fr_lib.loss.advanced`
and :mod:`fr_lib.loss.quality` share: the one-hot mask of the true class,
ArcFace's fallback past θ + m = π, running statistics as float64 NDArrays
and the widening of the inputs before a state update."""
import math

import numpy as np
import mxnet as mx

from ..utils.checks import compute_dtype

__all__ = []


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


def _state(value):
    return mx.nd.array([float(value)], dtype=np.float64)


def _widen(cos, label, *others):
    """Cast as the base class does (fp16 -> fp32, the rest to the cosine
    dtype) before the state update sees the inputs; the base's own casts
    then have nothing left to do."""
    dtype = compute_dtype(cos.dtype)
    return [x.astype(dtype, copy=False) for x in (cos, label) + others], dtype
