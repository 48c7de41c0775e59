"""Batch samplers: P x K identities, class-balanced, and sharding over workers.

- :class:`PKSampler` yields whole batches of P identities x K images, the
  batches that in-batch mining losses (:class:`fr_lib.loss.TripletLoss`,
  :class:`fr_lib.loss.ContrastiveBatchLoss`) need: use it as
  ``DataLoader(dataset, batch_sampler=PKSampler(labels, p, k))``.
- :class:`ClassBalancedSampler` yields single indices such that every class
  is equally likely (``DataLoader(dataset, batch_size, sampler=...)``).
- :class:`ShardSampler` splits ``range(length)`` between workers.

Every split between workers uses :func:`fr_lib.data.source.shard` (the one
sharding rule of fr_lib's data sources: contiguous blocks, the first
``n % num_parts`` one longer).

Labels come either as one label per sample (an array, as ``dataset.labels``
of a plain RecordIO or an image folder), or as an identity index: a mapping
``identity -> samples`` as an InsightFace-layout ``train.rec`` stores it in
its identity records. A mapping value is a ``range``, a 2-tuple
``(start, end)`` meaning the half-open range ``[start, end)``, or a list /
1-D array of sample indices. (A 2-element *list* is two indices, not a
range: convert an InsightFace ``[start, end)`` label array with ``tuple()``.)
The samplers yield these indices as they are, so they must be the indices
the dataset's ``__getitem__`` takes.

Randomness and epochs
---------------------
The samplers draw from ``numpy.random.default_rng([seed, epoch])``, so the
same seed and epoch give the same indices on every machine and in every
worker. Each ``iter()`` uses the current epoch and then advances it by one,
so successive epochs differ without any call; :meth:`set_epoch` sets the
epoch the next ``iter()`` uses (call it at the start of every epoch in
distributed training, so that all workers agree even if one of them
iterated an extra time).
"""
from collections.abc import Mapping
import numbers

import numpy as np
from mxnet.gluon.data import Sampler

from .source import check_part as _check_part, shard
from ..utils.checks import check_int

__all__ = ["PKSampler", "ClassBalancedSampler", "ShardSampler"]


def _check_int(name, value, low):
    # sample counts and seeds: integral types only (3.0 is refused here)
    if not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return check_int(name, value, low)


def _index_values(identity, value):
    """Sample indices of one identity-index entry, as an int64 array."""
    if isinstance(value, range):
        return np.arange(value.start, value.stop, value.step, dtype=np.int64)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"identity {identity!r}: a tuple must be (start, end), "
                             f"got {value!r}")
        start, end = value
        if int(start) != start or int(end) != end or not 0 <= start <= end:
            raise ValueError(f"identity {identity!r}: (start, end) must be integers "
                             f"with 0 <= start <= end, got {value!r}")
        return np.arange(int(start), int(end), dtype=np.int64)
    values = np.asarray(value)
    if values.ndim != 1:
        raise ValueError(f"identity {identity!r}: expected a range, (start, end) or "
                         f"a 1-D list of indices, got {value!r}")
    if values.size and ((values != np.floor(values)).any() or values.min() < 0):
        raise ValueError(f"identity {identity!r}: indices must be integers >= 0")
    return values.astype(np.int64)


def _groups(labels):
    """(identities, list of index arrays, number of samples) from either form."""
    if isinstance(labels, Mapping):
        identities = list(labels)
        groups = [_index_values(i, labels[i]) for i in identities]
        everything = np.concatenate(groups) if groups else np.zeros(0, np.int64)
        if np.unique(everything).size != everything.size:
            raise ValueError("identity index: a sample index belongs to two "
                             "identities (or appears twice)")
        return identities, groups, int(everything.size)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one label per sample) or an identity "
                         f"index mapping, got shape {labels.shape}")
    identities, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=identities.size))[:-1]
    return list(identities), np.split(order.astype(np.int64), bounds), int(labels.size)


class _EpochSampler(Sampler):
    """Epoch bookkeeping shared by the samplers (see the module docstring)."""

    def __init__(self, seed):
        self._seed = _check_int("seed", seed, 0)
        self._epoch = 0

    def set_epoch(self, epoch):
        """Use ``epoch`` for the next ``iter()`` (later ones count up from it)."""
        self._epoch = _check_int("epoch", epoch, 0)

    @property
    def epoch(self):
        """The epoch the next ``iter()`` will use."""
        return self._epoch

    def _take_epoch(self):
        # read when iter() is called, not at the first next(): generators
        # would otherwise pick their epoch lazily
        epoch, self._epoch = self._epoch, self._epoch + 1
        return epoch


class PKSampler(_EpochSampler):
    """Batches of ``p`` identities x ``k`` samples each (a batch sampler).

    Book: introduced in ``chapter_loss/metric-learning`` (对比损失与三元组损失).

    Each batch is a list of ``p * k`` dataset indices: ``k`` of the first
    identity, then ``k`` of the second, and so on, with ``p`` different
    identities. Identities are visited in a random order, ``p`` at a time;
    when fewer than ``p`` are left the order is reshuffled (the leftovers
    wait for the next round), so over an epoch every identity comes up about
    equally often, whatever its number of images. The ``k`` samples of an
    identity are drawn without replacement.

    Parameters
    ----------
    labels : array-like or mapping
        One label per sample, or an identity index ``identity -> range,
        (start, end) or list of indices`` (see the module docstring).
    p : int
        Identities per batch (>= 1; a triplet loss needs >= 2).
    k : int
        Samples per identity (>= 1; a triplet loss needs >= 2).
    num_batches : int, optional
        Batches per epoch (and per part). Default: ``num_samples // (p * k
        * num_parts)``, at least 1, i.e. about one pass over the data
        across all parts together.
    replace_small : bool, default True
        What to do with an identity that has fewer than ``k`` samples (but at
        least one): ``True`` uses it, taking all its samples and filling the
        remaining slots by drawing from them with replacement; ``False``
        skips it. Identities without samples are always skipped.
    seed : int, default 0
        Seed of the random draws (see "Randomness and epochs").
    num_parts, part_index : int, default 1, 0
        Sharding for several workers: in every epoch the usable identities
        are shuffled (the same way in every part, from ``seed`` and the
        epoch) and split between the parts by
        :func:`~fr_lib.data.source.shard` (contiguous blocks of the
        shuffled identities), so the parts draw their batches from disjoint
        sets of identities, and so from disjoint samples. Every part yields ``num_batches`` batches, so synchronous
        workers stay in step.

    Raises
    ------
    ValueError
        For bad arguments, or when fewer than ``p * num_parts`` identities
        are usable (each part needs ``p`` of them for one batch).
    """

    def __init__(self, labels, p, k, num_batches=None, replace_small=True, seed=0,
                 num_parts=1, part_index=0):
        super().__init__(seed)
        self._p = _check_int("p", p, 1)
        self._k = _check_int("k", k, 1)
        self._num_parts, self._part_index = _check_part(num_parts, part_index)
        self._replace_small = bool(replace_small)
        identities, groups, num_samples = _groups(labels)
        sizes = np.array([g.size for g in groups], dtype=np.int64)
        usable = sizes >= (1 if self._replace_small else self._k)
        needed = self._p * self._num_parts
        if usable.sum() < needed:
            small = int(((sizes > 0) & (sizes < self._k)).sum())
            hint = (f"; {small} more have 1 to {self._k - 1} samples (pass "
                    f"replace_small=True to use them)"
                    if small and not self._replace_small else "")
            parts = f" x num_parts={self._num_parts}" if self._num_parts > 1 else ""
            raise ValueError(f"need at least p={self._p}{parts} = {needed} usable "
                             f"identities, but only {int(usable.sum())} of "
                             f"{len(identities)} have at least "
                             f"{1 if self._replace_small else self._k} samples{hint}")
        self._identities = [identities[i] for i in np.flatnonzero(usable)]
        self._groups = [groups[i] for i in np.flatnonzero(usable)]
        if num_batches is None:
            num_batches = max(1, num_samples // (self._p * self._k * self._num_parts))
        self._num_batches = _check_int("num_batches", num_batches, 1)

    @property
    def batch_size(self):
        """``p * k``."""
        return self._p * self._k

    @property
    def identities(self):
        """The usable identities (labels or index keys), in input order."""
        return list(self._identities)

    def __len__(self):
        return self._num_batches

    def __iter__(self):
        return self._batches(self._take_epoch())

    def _batches(self, epoch):
        # all parts split the same shuffle of the identities: disjoint shares
        order = np.random.default_rng([self._seed, epoch]).permutation(len(self._groups))
        mine = order[shard(order.size, self._num_parts, self._part_index)]
        # then a stream of its own per part for the batches themselves
        rng = np.random.default_rng([self._seed, epoch, self._part_index + 1])
        queue, position = rng.permutation(mine), 0
        for _ in range(self._num_batches):
            if position + self._p > queue.size:
                queue, position = rng.permutation(mine), 0
            batch = []
            for identity in queue[position:position + self._p]:
                batch.extend(self._draw(rng, self._groups[identity]))
            position += self._p
            yield batch

    def _draw(self, rng, samples):
        if samples.size >= self._k:
            return rng.choice(samples, self._k, replace=False).tolist()
        extra = rng.choice(samples, self._k - samples.size, replace=True)
        return rng.permutation(np.concatenate([samples, extra])).tolist()


class ClassBalancedSampler(_EpochSampler):
    """Sample indices such that every class is equally likely.

    Book: introduced in ``chapter_data/sampling`` (P×K 采样与数据分片).

    Each draw picks a class uniformly at random, then one of its samples
    uniformly (draws are independent, i.e. with replacement): sample ``i``
    of class ``c`` has probability ``1 / (C * n_c)`` for ``C`` classes with
    ``n_c`` samples each. Classes without samples (empty identity-index
    entries) are left out.

    Parameters
    ----------
    labels : array-like or mapping
        One label per sample, or an identity index (see the module docstring).
    num_samples : int, optional
        Indices per epoch; default: the number of samples.
    seed : int, default 0
        Seed of the random draws (see "Randomness and epochs").
    """

    def __init__(self, labels, num_samples=None, seed=0):
        super().__init__(seed)
        _, groups, total = _groups(labels)
        groups = [g for g in groups if g.size]
        if not groups:
            raise ValueError("labels hold no samples")
        self._indices = np.concatenate(groups)
        self._weights = np.concatenate([np.full(g.size, 1.0 / g.size) for g in groups])
        self._weights /= self._weights.sum()
        self._num_samples = _check_int("num_samples",
                                       total if num_samples is None else num_samples, 1)

    @property
    def probabilities(self):
        """``(indices, probability of each)`` of one draw."""
        return self._indices.copy(), self._weights.copy()

    def __len__(self):
        return self._num_samples

    def __iter__(self):
        rng = np.random.default_rng([self._seed, self._take_epoch()])
        return iter(rng.choice(self._indices, self._num_samples, p=self._weights).tolist())


class ShardSampler(_EpochSampler):
    """One worker's share of ``range(length)``.

    Book: introduced in ``chapter_data/sampling`` (P×K 采样与数据分片).

    The indices (in order, or permuted with ``shuffle=True``) are cut into
    ``num_parts`` contiguous blocks; part ``i`` gets block ``i``
    (:func:`~fr_lib.data.source.shard`, the rule of every fr_lib data
    source). Without
    ``pad`` the blocks differ in size by at most one (the first
    ``length % num_parts`` parts get the extra index) and together hold
    every index exactly once. With ``pad=True`` every part gets
    ``ceil(length / num_parts)`` indices, each short part adding one index
    from the start of the order (short part ``j`` the ``j``-th one, wrapping
    around when ``length`` is smaller than the number of short parts), so
    that synchronous workers run the same number of steps; then every index
    is covered at least once. Contiguous blocks keep
    an unshuffled part reading one stretch of a RecordIO file.

    With ``shuffle=True`` every part computes the same permutation from
    ``seed`` and the epoch (see "Randomness and epochs"), so the parts stay
    disjoint in every epoch as long as they agree on the epoch.

    Parameters
    ----------
    length : int
        Number of samples.
    num_parts : int
        Number of workers (>= 1).
    part_index : int
        This worker, in ``[0, num_parts)``.
    shuffle : bool, default False
        Permute the indices each epoch.
    seed : int, default 0
        Seed of the permutation.
    pad : bool, default False
        Make all parts the same length (see above).
    """

    def __init__(self, length, num_parts, part_index, shuffle=False, seed=0, pad=False):
        super().__init__(seed)
        self._length = _check_int("length", length, 0)
        self._num_parts, self._part_index = _check_part(num_parts, part_index)
        self._shuffle, self._pad = bool(shuffle), bool(pad)
        self._share = shard(self._length, self._num_parts, self._part_index,
                            "pad" if self._pad else "keep")

    def __len__(self):
        return len(self._share)

    def __iter__(self):
        rng = np.random.default_rng([self._seed, self._take_epoch()])
        if self._shuffle:
            order = rng.permutation(self._length)
        else:
            order = np.arange(self._length)
        return iter(order[self._share].tolist())
