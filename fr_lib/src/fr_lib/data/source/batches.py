"""Resumable batches: a position (epoch, batch) from which the stream
continues exactly (:class:`ResumableBatches`), and its in-memory case
:class:`ArrayBatches`."""
import threading
import weakref

import numpy as np
import mxnet as mx

from ...utils.checks import check_int
from ..prefetch import Prefetcher
from .protocol import BatchSource, check_state
from .sharding import check_part, epoch_order, global_batches, mirror_flips

__all__ = ["ResumableBatches", "ArrayBatches"]


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
        self.num_samples = check_int("number of samples", num_samples, 1)
        self.batch_size = None if batch_size is None else check_int("batch_size",
                                                                    batch_size, 1)
        self.shuffle, self.rand_mirror = bool(shuffle), bool(rand_mirror)
        self.seed = check_int("seed", seed, 0)
        self.num_parts, self.part_index = check_part(num_parts, part_index)
        self.prefetch = check_int("prefetch", prefetch, 0)
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
