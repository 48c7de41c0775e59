"""Batches from a :class:`~fr_lib.data.recordio.FaceRecordDataset`: the
iterator ``FaceRecordIter`` and the trainer's ``RecordBatches``, both
:class:`~fr_lib.data.source.BatchSource` s (resumable, sharded by
:func:`~fr_lib.data.source.shard`), decoding with
:class:`~fr_lib.data.recordio.decode.FaceBatchify`."""
import warnings

import numpy as np

from ...utils.checks import check_int
from .dataset import FaceRecordDataset
from .decode import FaceBatchify
from ..source import (BatchSource, ResumableBatches, check_part, check_state,
                      epoch_order, global_batches, mirror_flips, shard)


class FaceRecordIter(BatchSource):
    """Fast batches from a :class:`FaceRecordDataset`.

    Book: introduced in ``chapter_data/augmentation`` (数据增强与像素约定).

    The file is read in the calling thread (a handful of ``pread`` calls per
    batch); decoding, mirroring and normalisation of the whole batch happen in
    :class:`FaceBatchify`, in ``decode_threads`` helper threads while the caller
    works on the previous batch (with ``decode_threads=0``, in the calling
    thread). Labels and pixels are exactly those of the dataset's
    ``__getitem__`` followed by :func:`~fr_lib.data.transforms.normalize_batch`.

    Each ``for`` loop (each ``iter()``) runs one epoch; it is also a
    :class:`~fr_lib.data.source.BatchSource`: :meth:`next_batch` continues
    across epochs, and :meth:`state_dict` / :meth:`load_state_dict` save and
    restore the position (after a load, the next ``iter()`` runs the rest of
    the saved epoch). The order of epoch ``e`` and the mirror flips of each
    batch depend only on ``(seed, e, batch)``, so a resumed iterator gives
    exactly the batches that would have followed.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
        The dataset, or a path given to :class:`FaceRecordDataset`.
    batch_size : int
    shuffle : bool
        New random order every epoch (ignored with ``batch_sampler``).
    last_batch : {'keep', 'discard'}
        What to do with a final incomplete batch.
    rand_mirror : bool
        Mirror each image with probability 1/2.
    normalize : bool
        float32 NCHW in the pixel convention (default) or uint8 NHWC RGB.
    decode_threads : int
        Decoding threads (0: decode in the calling thread). ``num_workers``
        is its deprecated name (the word means processes elsewhere in fr_lib).
    batch_sampler : iterable of lists of int or None
        Gives the dataset positions of each batch (e.g. a P×K sampler); it is
        iterated once per epoch (after ``set_epoch(epoch)`` when it has that
        method, which resuming a position needs).
    seed : int or None
        Seed for shuffling and mirroring (None: drawn at random once).
    num_parts, part_index : int, default 1, 0
        Read part ``part_index`` of ``num_parts`` (one per worker): every
        global batch of ``num_parts * batch_size`` positions of the epoch
        order is split by :func:`~fr_lib.data.source.shard`. Not with a
        ``batch_sampler`` (give the sampler the sharding).

    Yields
    ------
    data : NDArray
        ``(B, 3, H, W)`` float32 (or ``(B, H, W, 3)`` uint8).
    label : NDArray
        ``(B,)`` float32 class ids.
    """

    _STATE_KEYS = ("seed", "num_samples", "batch_size", "num_parts", "part_index")

    def __init__(self, dataset, batch_size=128, shuffle=False, last_batch="keep",
                 rand_mirror=False, normalize=True, decode_threads=0,
                 batch_sampler=None, seed=None, num_parts=1, part_index=0,
                 num_workers=None):
        if num_workers is not None:
            warnings.warn("FaceRecordIter(num_workers=...) is now decode_threads=...",
                          DeprecationWarning, stacklevel=2)
            decode_threads = num_workers
        if isinstance(dataset, str):
            dataset = FaceRecordDataset(dataset)
        if last_batch not in ("keep", "discard"):
            raise ValueError(f"last_batch must be 'keep' or 'discard', got "
                             f"{last_batch!r}")
        batch_size = check_int("batch_size", batch_size, 1)
        self.num_parts, self.part_index = check_part(num_parts, part_index)
        if batch_sampler is not None and self.num_parts > 1:
            raise ValueError("num_parts/part_index shard the shuffled order; with a "
                             "batch_sampler give the sampler its num_parts and "
                             "part_index instead (e.g. PKSampler(..., num_parts=...))")
        self.dataset = dataset
        self.num_samples = len(dataset)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.last_batch = last_batch
        self.rand_mirror = bool(rand_mirror)
        self.batch_sampler = batch_sampler
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None \
            else check_int("seed", seed, 0)
        self.batchify = FaceBatchify(dataset.image_size, False, normalize,
                                     decode_threads, dataset.skip_bad)
        self._epoch, self._start = 0, 0  # where the next iter() starts
        self._pos = None                 # (epoch, batch) of the epoch in progress
        self._stream = None              # the epoch next_batch() draws from
        self._cache = (None, None)
        if batch_sampler is None and len(self) < 1:
            raise ValueError(f"{self.num_samples} images over {self.num_parts} "
                             f"part(s) make no batch of {batch_size} with "
                             "last_batch='discard'")

    def _batches(self, epoch):
        """This part's batches (lists of dataset positions) of ``epoch``."""
        if self._cache[0] == epoch:
            return self._cache[1]
        if self.batch_sampler is not None:
            if hasattr(self.batch_sampler, "set_epoch"):
                self.batch_sampler.set_epoch(epoch)
            batches = [list(b) for b in self.batch_sampler]
        else:
            order = epoch_order(self.seed, epoch, self.num_samples, self.shuffle)
            batches = global_batches(order, self.batch_size, self.num_parts,
                                     self.part_index, self.last_batch == "keep")
        self._cache = (epoch, batches)
        return batches

    def positions(self, epoch, batch):
        """Dataset positions of batch ``batch`` of epoch ``epoch`` (named by the
        trainer's label check)."""
        return self._batches(epoch)[batch]

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        size = self.num_parts * self.batch_size
        full, rest = divmod(self.num_samples, size)
        if self.last_batch == "keep" and rest:
            full += len(shard(rest, self.num_parts, self.part_index)) > 0
        return full

    def _flips(self, epoch, batch, n):
        if not self.rand_mirror:
            return np.zeros(n, dtype=bool)
        return mirror_flips(self.seed, epoch, batch, self.part_index, n)

    def __iter__(self):
        epoch, start = self._epoch, self._start
        self._epoch, self._start = epoch + 1, 0
        self._pos = (epoch, start)
        return self._run(epoch, start)

    def _run(self, epoch, start):
        read, bf = self.dataset.read_raw, self.batchify
        batches = self._batches(epoch)
        pending = None
        try:
            for b in range(start, len(batches)):
                records = [read(i) for i in batches[b]]
                nxt = (b, bf.submit(records, self._flips(epoch, b, len(records))))
                if pending is not None:
                    out = bf.collect(pending[1])
                    self._pos = (epoch, pending[0] + 1)
                    yield out
                pending = nxt
            if pending is not None:
                last, pending = pending, None
                out = bf.collect(last[1])
                self._pos = (epoch, last[0] + 1)
                yield out
        finally:
            if pending is not None:  # abandoned mid-epoch: let threads finish
                for f in pending[1][4]:
                    f.result()
            self._merge_bad()

    def next_batch(self):
        """The next ``(data, label)``; after an epoch's last batch comes the
        next epoch's first."""
        for _ in range(2):
            if self._stream is None:
                self._stream = iter(self)
            try:
                return next(self._stream)
            except StopIteration:
                self._stream = None
        raise RuntimeError("FaceRecordIter: an epoch without batches")

    def state_dict(self):
        """The position after the last batch handed out (a JSON-serialisable
        dict: the next batch is batch ``batch`` of epoch ``epoch``)."""
        epoch, batch = self._pos if self._pos is not None else (self._epoch,
                                                                self._start)
        return {"epoch": epoch, "batch": batch, "seed": self.seed,
                "num_samples": self.num_samples, "batch_size": self.batch_size,
                "num_parts": self.num_parts, "part_index": self.part_index}

    @property
    def num_classes(self):
        """The dataset's number of classes (what a trainer's head needs)."""
        return int(self.dataset.num_classes)

    @property
    def epoch(self):
        """Epoch of the position (see :meth:`state_dict`)."""
        return self.state_dict()["epoch"]

    @property
    def batch(self):
        """Batch of the position (see :meth:`state_dict`)."""
        return self.state_dict()["batch"]

    def load_state_dict(self, state):
        """Continue from a position saved by :meth:`state_dict`: the next
        batch (of :meth:`next_batch` or of the next ``for`` loop) is the one
        that followed it.

        Raises
        ------
        ValueError
            When the saved stream had another seed, size, batch size or
            sharding, or the ``batch_sampler`` has no ``set_epoch``.
        """
        epoch, batch = check_state(self, state, self._STATE_KEYS)
        if self.batch_sampler is not None and \
                not hasattr(self.batch_sampler, "set_epoch"):
            raise ValueError("resuming a position needs a batch_sampler with "
                             "set_epoch(epoch) (e.g. fr_lib.data.PKSampler)")
        self._close_stream()
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        self._epoch, self._start, self._pos = epoch, batch, None

    def _close_stream(self):
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _merge_bad(self):
        if self.batchify.bad_records:
            self.dataset.bad_records.extend(self.batchify.bad_records)
            self.batchify.bad_records = []

    def close(self):
        """Stop the decoding threads."""
        self._close_stream()
        self.batchify.close()


class RecordBatches(ResumableBatches):
    """Resumable batches of a face RecordIO set (InsightFace or plain layout).

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Reads with :meth:`~fr_lib.data.FaceRecordDataset.read_raw` and decodes
    with :class:`~fr_lib.data.FaceBatchify` (the pixels of
    :class:`~fr_lib.data.FaceRecordIter`), but the order and the mirror
    flips depend only on ``(seed, epoch, batch)``, so the stream has a
    position that checkpoints can store. Batches are made ``prefetch``
    ahead in a background thread (:class:`~fr_lib.data.source.Prefetcher`),
    so reading and decoding overlap the training step; the batches and
    :meth:`state_dict` are the same as without it.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
        The dataset, or a directory with ``train.rec``/``train.idx``.
    batch_size : int, default 128
        Batch size of this worker (ignored with ``batch_sampler``).
    shuffle : bool, default True
    rand_mirror : bool, default True
    seed : int, default 0
    decode_threads : int, default 0
        Decoding threads (0: decode in the thread that makes the batch, the
        prefetch thread with ``prefetch > 0``). ``num_workers`` is its
        deprecated old name.
    batch_sampler : sampler with ``set_epoch``, optional
        E.g. :class:`~fr_lib.data.PKSampler`; replaces the shuffled order.
    num_parts, part_index : int, default 1, 0
        Sharding over workers (see :class:`~fr_lib.data.source.ArrayBatches`).
    check : bool, default True
        Passed to :class:`~fr_lib.data.FaceRecordDataset` when ``dataset``
        is a path.
    prefetch : int, default 2
        Batches made ahead in a background thread (0: each batch is made
        when asked for, in the calling thread).

    Attributes
    ----------
    num_classes : int
    """

    def __init__(self, dataset, batch_size=128, shuffle=True, rand_mirror=True,
                 seed=0, decode_threads=0, batch_sampler=None, num_parts=1,
                 part_index=0, check=True, num_workers=None, prefetch=2):
        if num_workers is not None:
            warnings.warn("RecordBatches(num_workers=...) is now decode_threads=...",
                          DeprecationWarning, stacklevel=2)
            decode_threads = num_workers
        if isinstance(dataset, str):
            dataset = FaceRecordDataset(dataset, check=check)
        self.dataset = dataset
        self.num_classes = int(dataset.num_classes)
        self.batchify = FaceBatchify(dataset.image_size, False, True, decode_threads,
                                     dataset.skip_bad)
        super().__init__(len(dataset), batch_size, shuffle, seed, rand_mirror,
                         batch_sampler, num_parts, part_index, prefetch)

    def _make(self, positions, flips):
        records = [self.dataset.read_raw(i) for i in positions]
        return self.batchify.decode(records, flips)

    def close(self):
        """Stop the prefetch and decoding threads."""
        super().close()
        self.batchify.close()
