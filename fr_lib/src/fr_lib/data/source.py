"""Batch sources: one protocol, one sharding rule, one prefetcher.

Every training batch source of fr_lib — :class:`ArrayBatches` (in-memory
arrays), :class:`~fr_lib.data.recordio.RecordBatches` and
:class:`~fr_lib.data.recordio.FaceRecordIter` (RecordIO, decoded with
OpenCV) and :class:`~fr_lib.data.dali.DaliFaceIter` (RecordIO, decoded by
NVIDIA DALI) — implements :class:`BatchSource`, the interface that
:class:`~fr_lib.train.FaceTrainer` pulls from:

``next_batch() -> (X, y)``
    The next batch as NDArrays: ``X`` the samples, ``y`` float32 class ids.
    The stream never ends: after the last batch of an epoch comes the first
    batch of the next one.
``len(source)``
    Batches per epoch (of this part).
``state_dict()`` / ``load_state_dict(state)``
    The position as a JSON-serialisable dict with at least ``epoch`` and
    ``batch`` (the next batch is batch ``batch`` of epoch ``epoch``); a
    source given a saved state continues with exactly the batches that
    would have followed. A state saved by a source with another seed,
    size, batch size or sharding is refused.
``epoch``, ``batch``
    The position as attributes (what ``state_dict()`` holds; read by
    :func:`fr_lib.train.callbacks.epoch_finished`).
``num_parts``, ``part_index``
    Which share of the data this source reads (see :func:`shard`).
``close()``
    Stop background threads; the source can still be used afterwards
    (threads start again when needed).

**Prefetching.** :class:`Prefetcher` runs any source's ``next_batch`` in a
background thread, a bounded number of batches ahead, so that reading and
decoding the next batch overlap the trainer's step. Its ``state_dict`` is the
position after the batch the *consumer* last received, not that of the
producer thread, so a checkpoint taken while batches are in flight resumes
at the right batch. An exception raised while making a batch is raised again
by the ``next_batch`` call that would have returned it, with a note naming
the position (the source's own message names the record and file).
``RecordBatches(prefetch=2)`` (its default) uses it. ``FaceRecordIter``
overlaps in its own way (its ``num_workers`` decoding threads work on the
next batch while the caller uses the current one) and ``DaliFaceIter`` in
DALI's threads; either can still be wrapped in a :class:`Prefetcher`.

**Randomness.** ``ArrayBatches``, ``RecordBatches`` and ``FaceRecordIter``
draw the order of epoch ``e`` from ``default_rng([seed, e])``
(:func:`epoch_order`) and the mirror flips of batch ``b`` from
``default_rng([seed, e, b, part_index, 1])`` (:func:`mirror_flips`), so a
position is all a resumed stream needs. DALI draws from its pipeline seed;
``DaliFaceIter`` resumes by running a new pipeline to the position.

**Sharding.** Every source splits its data between ``num_parts`` workers
with :func:`shard` (contiguous blocks, the first ``n % num_parts`` one
longer). Sources that feed a synchronous trainer
(:class:`ArrayBatches`, ``RecordBatches``, ``FaceRecordIter``) apply it to
each *global batch* — the ``num_parts * batch_size`` consecutive positions of
the epoch order that the workers consume in one step — so that ``k`` workers
with batch ``B`` see exactly the samples one worker with batch ``k·B`` sees.
:class:`~fr_lib.data.ShardSampler` applies it to the whole epoch order,
:class:`~fr_lib.data.PKSampler` to the shuffled identities and
``DaliFaceIter`` to the image records in file order (a contiguous stretch of
the file per worker). Partial FC's sharding of the *classes* over devices
(:mod:`fr_lib.train.partial_fc`) is another matter and not done here.
"""
import abc
import numbers
import threading
import weakref

import numpy as np
import mxnet as mx

from .prefetch import Prefetcher

__all__ = ["shard", "BatchSource", "Prefetcher", "ArrayBatches"]


from ..utils.checks import check_int as _check_int  # noqa: E402


def check_part(num_parts, part_index):
    """``(num_parts, part_index)`` as ints, or a ValueError naming the bad one."""
    num_parts = _check_int("num_parts", num_parts, 1)
    if (isinstance(part_index, bool) or not isinstance(part_index, numbers.Integral)
            or not 0 <= part_index < num_parts):
        raise ValueError(f"part_index must be an integer in [0, {num_parts}) "
                         f"for num_parts={num_parts}, got {part_index!r}")
    return num_parts, int(part_index)


def shard(n, num_parts, part_index, remainder="keep"):
    """Positions ``0 .. n-1`` that part ``part_index`` of ``num_parts`` takes.

    Book: introduced in ``chapter_data/sampling`` (P×K 采样与数据分片).

    The rule of every fr_lib data source: the positions are cut into
    ``num_parts`` contiguous blocks in order, and part ``i`` takes block
    ``i``. The blocks have ``n // num_parts`` positions, and the first
    ``n % num_parts`` blocks one more. ``remainder`` says what to do with
    those extra positions:

    - ``'keep'``: nothing; the parts differ in size by at most one and
      together hold every position exactly once.
    - ``'drop'``: every part takes only the first ``n // num_parts`` of its
      block (equal sizes; the last position of each longer block is left
      out).
    - ``'pad'``: every part takes ``ceil(n / num_parts)`` positions: a short
      part ``j`` (``j >= n % num_parts``) appends position
      ``(j - n % num_parts) % n``, so the padding positions differ where
      ``n`` allows (equal sizes; every position at least once).

    Parameters
    ----------
    n : int
        Number of positions (samples, identities, records).
    num_parts : int
        Number of parts (workers), >= 1.
    part_index : int
        This part, in ``[0, num_parts)``.
    remainder : {'keep', 'drop', 'pad'}

    Returns
    -------
    numpy.ndarray
        int64 positions, increasing except for a ``'pad'`` position.

    Examples
    --------
    >>> [shard(10, 4, i).tolist() for i in range(4)]
    [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    >>> [shard(10, 4, i, 'drop').tolist() for i in range(4)]
    [[0, 1], [3, 4], [6, 7], [8, 9]]
    >>> [shard(10, 4, i, 'pad').tolist() for i in range(4)]
    [[0, 1, 2], [3, 4, 5], [6, 7, 0], [8, 9, 1]]
    """
    n = _check_int("n", n, 0)
    num_parts, part_index = check_part(num_parts, part_index)
    if remainder not in ("keep", "drop", "pad"):
        raise ValueError(f"remainder must be 'keep', 'drop' or 'pad', got {remainder!r}")
    base, extra = divmod(n, num_parts)
    start = part_index * base + min(part_index, extra)
    size = base + (part_index < extra)
    if remainder == "drop":
        size = base
    positions = np.arange(start, start + size, dtype=np.int64)
    if remainder == "pad" and extra and part_index >= extra:
        positions = np.append(positions, np.int64((part_index - extra) % n))
    return positions


def mirror_flips(seed, epoch, batch, part_index, n):
    """Mirror decisions of ``n`` samples of a batch: a function of its position
    only (``default_rng([seed, epoch, batch, part_index, 1])``), so that a
    resumed stream flips the same images."""
    rng = np.random.default_rng([seed, epoch, batch, part_index, 1])
    return rng.integers(0, 2, n).astype(bool)


def epoch_order(seed, epoch, n, shuffle):
    """The order of ``n`` samples in an epoch: ``default_rng([seed, epoch])``'s
    permutation, or ``0 .. n-1`` without ``shuffle``."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batches(order, batch_size, num_parts, part_index, keep_last=False):
    """This part's batches of an epoch ``order`` (lists of positions): the order
    is cut into global batches of ``num_parts * batch_size`` and each is split
    with :func:`shard`, so that the parts' ``b``-th batches together are the
    ``b``-th batch of one worker with the global batch size. With
    ``keep_last`` a final incomplete global batch is split too (its
    parts may be shorter, and a part with nothing of it has one batch less);
    otherwise it is dropped."""
    size = num_parts * batch_size
    full, rest = divmod(len(order), size)
    mine = shard(size, num_parts, part_index)
    out = [order[b * size:(b + 1) * size][mine].tolist() for b in range(full)]
    if keep_last and rest:
        last = order[full * size:][shard(rest, num_parts, part_index)]
        if last.size:
            out.append(last.tolist())
    return out


class BatchSource(abc.ABC):
    """The interface of a training batch source (see the module docstring).

    Subclasses implement :meth:`next_batch`, ``__len__``, :meth:`state_dict`
    and :meth:`load_state_dict`, and set ``num_parts``/``part_index`` when
    they shard. A source is a context manager that closes itself.
    """

    num_parts = 1
    part_index = 0

    @abc.abstractmethod
    def next_batch(self):
        """The next ``(X, y)`` pair of NDArrays; moves the position on."""

    @abc.abstractmethod
    def __len__(self):
        """Batches per epoch."""

    @abc.abstractmethod
    def state_dict(self):
        """The position (JSON-serialisable dict with ``epoch`` and ``batch``)."""

    @abc.abstractmethod
    def load_state_dict(self, state):
        """Continue from a position saved by :meth:`state_dict`."""

    def close(self):
        """Stop background threads (the source stays usable)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BatchSource.register(Prefetcher)


def check_state(source, state, keys):
    """Refuse a saved position whose stream had other ``keys`` values."""
    if not isinstance(state, dict) or "epoch" not in state or "batch" not in state:
        raise ValueError(f"a data position must be a dict with 'epoch' and 'batch' "
                         f"(from state_dict()), got {state!r}")
    for key in keys:
        if key in state and state[key] != getattr(source, key):
            raise ValueError(f"cannot resume the data position: the checkpoint "
                             f"has {key}={state[key]!r}, this data source "
                             f"{getattr(source, key)!r}")
    return int(state["epoch"]), int(state["batch"])


# -- resumable batches ----------------------------------------------------------

class _Cursor:
    """The producer side of a :class:`ResumableBatches`: its own position.

    It holds its owner weakly: the prefetch thread holds the cursor, and a
    strong reference would keep a forgotten source (and the thread) alive."""

    def __init__(self, owner, epoch, batch):
        self._owner = weakref.ref(owner)
        self.epoch, self.batch = epoch, batch
        self.name = type(owner).__name__

    @property
    def owner(self):
        owner = self._owner()
        if owner is None:
            raise RuntimeError(f"the {self.name} this prefetch thread served is gone")
        return owner

    def __len__(self):
        return len(self.owner)

    def next_batch(self):
        owner = self.owner
        self.epoch, self.batch = owner._roll(self.epoch, self.batch)
        out = owner.batch_at(self.epoch, self.batch)
        self.batch += 1
        return out

    def state_dict(self):
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state):
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


class ResumableBatches(BatchSource):
    """Deterministic batches with a position (epoch, batch) that can be saved.

    Batch ``b`` of epoch ``e`` depends only on ``(seed, e, b)``: the epoch
    order is :func:`epoch_order`, the sharding :func:`global_batches`, the
    mirror flips :func:`mirror_flips`. So after :meth:`load_state_dict`
    the stream continues exactly as it would have. Subclasses implement
    ``_make(positions, flips) -> (X, y)``.

    ``prefetch > 0`` makes the batches in a :class:`Prefetcher` thread that
    many ahead; the batches are the same.
    """

    _STATE_KEYS = ("seed", "num_samples", "batch_size", "num_parts", "part_index")

    def __init__(self, num_samples, batch_size, shuffle, seed, rand_mirror,
                 batch_sampler, num_parts, part_index, prefetch=0):
        self.num_samples = _check_int("number of samples", num_samples, 1)
        self.batch_size = None if batch_size is None else _check_int("batch_size",
                                                                     batch_size, 1)
        self.shuffle, self.rand_mirror = bool(shuffle), bool(rand_mirror)
        self.seed = _check_int("seed", seed, 0)
        self.num_parts, self.part_index = check_part(num_parts, part_index)
        self.prefetch = _check_int("prefetch", prefetch, 0)
        self.batch_sampler = batch_sampler
        if batch_sampler is None:
            if self.batch_size is None:
                raise ValueError("give batch_size or batch_sampler")
            if len(self) < 1:
                raise ValueError(
                    f"{num_samples} samples over {num_parts} part(s) make no batch "
                    f"of {batch_size}")
        elif not hasattr(batch_sampler, "set_epoch"):
            raise ValueError("batch_sampler must have set_epoch(epoch) (e.g. "
                             "fr_lib.data.PKSampler) so that a position can be resumed")
        self.epoch, self.batch = 0, 0
        self._cache = (None, None)
        self._lock = threading.Lock()
        self._prefetcher = None

    def __getstate__(self):  # picklable (e.g. for worker processes): no thread
        state = dict(self.__dict__)
        state["_lock"], state["_prefetcher"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self):
        """Batches per epoch (an incomplete last batch is dropped)."""
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return self.num_samples // (self.num_parts * self.batch_size)

    def _epoch_batches(self, epoch):
        with self._lock:  # the prefetch thread and the trainer may both ask
            if self._cache[0] != epoch:
                if self.batch_sampler is not None:
                    self.batch_sampler.set_epoch(epoch)
                    batches = [list(b) for b in self.batch_sampler]
                else:
                    order = epoch_order(self.seed, epoch, self.num_samples, self.shuffle)
                    batches = global_batches(order, self.batch_size, self.num_parts,
                                             self.part_index)
                self._cache = (epoch, batches)
            return self._cache[1]

    def positions(self, epoch, batch):
        """Dataset indices of batch ``batch`` of epoch ``epoch``."""
        return self._epoch_batches(epoch)[batch]

    def flips(self, epoch, batch, n):
        """Mirror decisions of that batch (all False without ``rand_mirror``)."""
        if not self.rand_mirror:
            return np.zeros(n, dtype=bool)
        return mirror_flips(self.seed, epoch, batch, self.part_index, n)

    def _roll(self, epoch, batch):
        return (epoch + 1, 0) if batch >= len(self) else (epoch, batch)

    def batch_at(self, epoch, batch):
        """Batch ``batch`` of epoch ``epoch`` as ``(X, y)`` (the position is
        not moved)."""
        positions = self.positions(epoch, batch)
        return self._make(positions, self.flips(epoch, batch, len(positions)))

    def next_batch(self):
        """The next ``(data, label)`` pair of NDArrays; moves the position on."""
        if not self.prefetch:
            self.epoch, self.batch = self._roll(self.epoch, self.batch)
            out = self.batch_at(self.epoch, self.batch)
            self.batch += 1
            return out
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(_Cursor(self, self.epoch, self.batch),
                                          self.prefetch)
        out = self._prefetcher.next_batch()
        state = self._prefetcher.state_dict()
        self.epoch, self.batch = state["epoch"], state["batch"]
        return out

    def _make(self, positions, flips):
        raise NotImplementedError

    def state_dict(self):
        """The position, as a JSON-serialisable dict."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "num_samples": self.num_samples, "batch_size": self.batch_size,
                "num_parts": self.num_parts, "part_index": self.part_index}

    def load_state_dict(self, state):
        """Continue from a position saved by :meth:`state_dict`.

        Parameters
        ----------
        state : dict

        Raises
        ------
        ValueError
            When the saved stream had another size, batch size, seed or
            sharding (the position would mean other samples).
        """
        epoch, batch = check_state(self, state, self._STATE_KEYS)
        self._stop_prefetch()
        self.epoch, self.batch = epoch, batch

    def _stop_prefetch(self):
        if self._prefetcher is not None:
            self._prefetcher.load_state_dict({"epoch": self.epoch, "batch": self.batch})
            self._prefetcher = None

    def close(self):
        """Stop the prefetch thread (batches made ahead are dropped)."""
        self._stop_prefetch()


class ArrayBatches(ResumableBatches):
    """Resumable batches of in-memory arrays (vectors, images, synthetic data).

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    X : array-like
        Samples; for images ``(N, C, H, W)``.
    y : array-like
        ``(N,)`` class ids.
    batch_size : int
        Batch size of this worker (all of its contexts together).
    shuffle : bool, default True
        A new order every epoch, drawn from ``(seed, epoch)``.
    seed : int, default 0
    rand_mirror : bool, default False
        Mirror each image (last axis) with probability 1/2.
    num_parts, part_index : int, default 1, 0
        Sharding over workers (:func:`shard` applied to each global batch
        of ``num_parts * batch_size`` samples of the epoch order: the
        workers' ``b``-th batches together are the ``b``-th batch of one
        worker with batch ``num_parts * batch_size``).
    batch_sampler : sampler with ``set_epoch``, optional
        E.g. :class:`~fr_lib.data.PKSampler` (P×K batches for the metric
        losses); replaces the shuffled order, ``batch_size`` and the sharding
        (the sampler shards itself).
    prefetch : int, default 0
        Batches made ahead in a background thread (:class:`Prefetcher`).

    Attributes
    ----------
    epoch, batch : int
        The position: the next batch is batch ``batch`` of epoch ``epoch``.
    num_classes : int
        ``max(y) + 1``.
    """

    def __init__(self, X, y, batch_size=None, shuffle=True, seed=0, rand_mirror=False,
                 num_parts=1, part_index=0, batch_sampler=None, prefetch=0):
        self.X = np.asarray(X, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.float32).reshape(-1)
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} samples but y has {len(self.y)}")
        self.num_classes = int(self.y.max()) + 1 if self.y.size else 0
        super().__init__(len(self.X), batch_size, shuffle, seed, rand_mirror,
                         batch_sampler, num_parts, part_index, prefetch)

    def _make(self, positions, flips):
        x = self.X[positions]
        if flips.any():
            x = x.copy()
            x[flips] = x[flips][..., ::-1]
        return mx.nd.array(x), mx.nd.array(self.y[positions])
