"""Which class centres a Partial FC step uses, in NumPy: the contiguous class
ranges of the shards and the positives plus uniformly drawn negatives of each
shard (:meth:`PartialFC.sample <fr_lib.train.partial_fc.PartialFC.sample>`).
"""
from collections import namedtuple

import numpy as np

from ...data.source.sharding import shard_range

__all__ = ["PartialFCSample"]


PartialFCSample = namedtuple("PartialFCSample", ["indices", "label"])
PartialFCSample.__doc__ = """The classes one Partial FC step uses (a named tuple).

Returned by :meth:`PartialFC.sample`; its two fields are described below.
"""
PartialFCSample.indices.__doc__ = (
    "Per shard, the sorted global class ids (int64 numpy array) whose centres "
    "are used; every positive class of the batch is in the shard that owns it.")
PartialFCSample.label.__doc__ = (
    "The labels remapped to columns of the joined sampled cosine matrix (int64): "
    "column ``offset_s + j`` is class ``indices[s][j]``, where ``offset_s`` is the "
    "number of classes sampled in the shards before ``s``.")


def _shard_ranges(num_classes, num_shards):
    """Contiguous ``[start, stop)`` ranges, sizes differing by at most one:
    the data sources' sharding rule (:func:`fr_lib.data.source.shard`)."""
    return [shard_range(num_classes, num_shards, s) for s in range(num_shards)]


def _sample_classes(labels, shard_ranges, num_sample, rng):
    """The sample of one step for checked int64 ``labels``: ``num_sample[s]``
    classes of shard ``s``, all its positives included (the algorithm is in
    the Notes of :meth:`PartialFC.sample`)."""
    indices, remapped = [], np.empty_like(labels)
    offset = 0
    for (start, stop), k in zip(shard_ranges, num_sample):
        inside = (labels >= start) & (labels < stop)
        pos = np.unique(labels[inside] - start)
        n_neg = k - pos.size
        if n_neg > 0:
            ranks = rng.choice(stop - start - pos.size, n_neg, replace=False,
                               shuffle=False)
            neg = ranks + np.searchsorted(pos - np.arange(pos.size), ranks,
                                          side="right")
            local = np.sort(np.concatenate([pos, neg]))
        else:
            local = pos
        remapped[inside] = offset + np.searchsorted(local, labels[inside] - start)
        indices.append(local + start)
        offset += local.size
    return PartialFCSample(indices, remapped)
