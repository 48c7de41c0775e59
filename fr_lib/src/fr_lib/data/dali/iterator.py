"""The DALI pipeline as a batch source: :class:`DaliFaceIter`."""
import os

import mxnet as mx

from ...utils.checks import check_int
from ..source import BatchSource, check_state, shard
from ..transforms import PIXEL_MEAN, PIXEL_SCALE
from . import _import_dali
from .index import _dataset, _refuse_rotated, write_dali_index

__all__ = ["DaliFaceIter"]

_READER = "Reader"


def _resolve_device(device, device_id):
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "cpu":
        return device
    from ...utils.device import list_gpus
    usable = mx.gpu(device_id) in list_gpus()
    if device == "gpu" and not usable:
        raise ValueError(f"device='gpu' yields NDArrays on mx.gpu({device_id}), "
                         "but MXNet cannot compute there (CPU build, no GPU, or "
                         "a GPU its kernels do not support); use device='cpu'")
    return "gpu" if usable else "cpu"


class DaliFaceIter(BatchSource):
    """Face batches decoded, mirrored and normalised by an NVIDIA DALI pipeline.

    Book: introduced in ``chapter_data/dali`` (DALI 流水线).

    Yields what :class:`~fr_lib.data.FaceRecordIter` yields, through DALI's
    MXNet plugin (``DALIGluonIterator``): the reader reads the image records
    listed by :func:`write_dali_index`, the decoder gives RGB, and
    ``crop_mirror_normalize`` computes ``(x - 127.5) / 128`` (exact in float32)
    into CHW, mirroring where a coin flip says so.

    Parameters
    ----------
    dataset : FaceRecordDataset or str
        The dataset, or a directory / ``.rec`` path (InsightFace or plain
        layout).
    batch_size : int
    shard_id, num_shards : int
        Read shard ``shard_id`` of ``num_shards`` (one per worker or device):
        :func:`~fr_lib.data.source.shard` of the image records in file
        order, contiguous, disjoint stretches that together cover every
        image once (the first ``N % num_shards`` one image longer). Also
        readable as ``part_index``/``num_parts``.
    shuffle : bool
        Shuffle within DALI's buffer of ``shuffle_buffer`` samples (see the
        module notes: a shuffled plain rec gives a full shuffle).
    rand_mirror : bool
        Mirror each image left-right with probability 1/2.
    seed : int or None
        Pipeline seed (shuffle and mirror coins); ``None`` lets DALI choose
        (and a position cannot be resumed).
    device : {'auto', 'cpu', 'gpu'}
        ``'gpu'`` decodes with nvJPEG (``device='mixed'``), normalises on the
        GPU and yields data on ``mx.gpu(device_id)`` (needs a GPU build of
        MXNet); ``'cpu'`` does everything in DALI's CPU threads; ``'auto'``
        picks ``'gpu'`` when both DALI and MXNet see a GPU.
    num_threads : int or None
        DALI's CPU worker threads; default ``min(4, os.cpu_count())``.
    device_id : int
        The GPU for ``device='gpu'``.
    last_batch : {'keep', 'discard'}
        Keep a final incomplete batch or drop it.
    shuffle_buffer : int
        Samples DALI holds to shuffle from (``initial_fill``).
    prefetch_queue_depth : int
        Batches DALI prepares ahead.
    index_path : str or None
        A ready DALI index (image records only, read as one shard: not with
        ``num_shards > 1``); default: written by :func:`write_dali_index`
        (this shard's records) next to the ``.rec``.
    check : bool or 'full'
        Passed to :class:`~fr_lib.data.FaceRecordDataset` when ``dataset`` is
        a path (``False`` trusts the files: fast on millions of images). When
        true, every image record is also checked for an EXIF-rotated JPEG,
        which DALI would decode differently from the Gluon path.

    Attributes
    ----------
    dataset : FaceRecordDataset
    index_path : str
    device : str
        ``'cpu'`` or ``'gpu'``, as resolved.
    shard_size : int
        Images in this shard (one epoch).

    Yields
    ------
    data : NDArray
        ``(B, 3, H, W)`` float32.
    label : NDArray
        ``(B,)`` float32 class ids.

    Raises
    ------
    ImportError
        When DALI or its MXNet plugin is missing; the message names
        ``DALI_PIP``.
    ValueError
        When (``check`` true) the rec holds an EXIF-rotated JPEG; the message
        names a record and :func:`~fr_lib.data.recordio.write_upright_rec`.

    Notes
    -----
    DALI cannot restart an epoch half-way: a loop that stops early continues
    where it stopped on the next ``for``, and :meth:`next_batch` continues
    the same stream. :meth:`load_state_dict` rebuilds the pipeline and runs
    it to the saved position (see the module notes). The rec's images must
    all have the same size (``crop_mirror_normalize`` does not resize).
    """

    def __init__(self, dataset, batch_size=128, shard_id=0, num_shards=1,
                 shuffle=False, rand_mirror=False, seed=None, device="auto",
                 num_threads=None, device_id=0, last_batch="keep",
                 shuffle_buffer=4096, prefetch_queue_depth=2, index_path=None,
                 check=True):
        _import_dali()  # a clear ImportError before any work
        batch_size = check_int("batch_size", batch_size, 1)
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"need 0 <= shard_id < num_shards, got shard_id="
                             f"{shard_id}, num_shards={num_shards}")
        if index_path and num_shards > 1:
            raise ValueError("index_path is read as one shard; with num_shards > 1 "
                             "leave it out (the shard's own index is written)")
        if last_batch not in ("keep", "discard"):
            raise ValueError(f"last_batch must be 'keep' or 'discard', got "
                             f"{last_batch!r}")
        self.dataset = _dataset(dataset, check)
        if check:
            _refuse_rotated(self.dataset)
        self.shard_id, self.num_shards = int(shard_id), int(num_shards)
        self.shard_size = len(shard(len(self.dataset), self.num_shards,
                                    self.shard_id))
        if self.shard_size == 0:
            raise ValueError(f"shard {shard_id} of {num_shards} is empty: the "
                             f"set has only {len(self.dataset)} images")
        self.index_path = index_path or write_dali_index(
            self.dataset, num_parts=self.num_shards, part_index=self.shard_id)
        self.device = _resolve_device(device, device_id)
        self.batch_size = int(batch_size)
        self.last_batch = last_batch
        self.seed = None if seed is None else int(seed)
        threads = num_threads or min(4, os.cpu_count() or 1)
        self._build_args = (shuffle, rand_mirror, self.seed, threads, device_id,
                            shuffle_buffer, prefetch_queue_depth)
        self._epoch, self._batch = 0, 0  # position of the batches handed out
        self._start()

    @property
    def num_parts(self):
        return self.num_shards

    @property
    def part_index(self):
        return self.shard_id

    @property
    def num_samples(self):
        return self.shard_size

    def _start(self):
        """Build the pipeline and the plugin's iterator (position 0)."""
        dali, gluon_iter, policy = _import_dali()
        self._pipe = self._build(dali, *self._build_args)
        lbp = policy.PARTIAL if self.last_batch == "keep" else policy.DROP
        try:  # the plugin runs the pipeline once to learn the output shapes
            self._iter = gluon_iter([self._pipe], reader_name=_READER,
                                    last_batch_policy=lbp, auto_reset=True)
        except RuntimeError as err:
            why = " ".join(ln.strip() for ln in str(err).splitlines()[:3])
            raise RuntimeError(
                f"DALI failed on the first batch of {self.dataset.rec_path} "
                f"read through {self.index_path} ({why}). An index that "
                "lists InsightFace's header or identity records makes DALI "
                "decode empty images; write one of the image records only "
                "with fr_lib.data.write_dali_index") from err

    def _build(self, dali, shuffle, rand_mirror, seed, threads, device_id,
               shuffle_buffer, depth):
        fn, types = dali.fn, dali.types
        gpu = self.device == "gpu"
        pipe = dali.Pipeline(batch_size=self.batch_size, num_threads=threads,
                             device_id=device_id if gpu else None,
                             seed=-1 if seed is None else int(seed),
                             prefetch_queue_depth=depth)
        with pipe:
            # the index lists this shard only (write_dali_index): one DALI shard
            jpegs, labels = fn.readers.mxnet(
                path=[self.dataset.rec_path], index_path=[self.index_path],
                shard_id=0, num_shards=1,
                random_shuffle=bool(shuffle), initial_fill=int(shuffle_buffer),
                pad_last_batch=True, stick_to_shard=True, name=_READER)
            images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu",
                                       output_type=types.RGB)
            mirror = fn.random.coin_flip(probability=0.5) if rand_mirror else 0
            images = fn.crop_mirror_normalize(
                images, dtype=types.FLOAT, output_layout="CHW",
                mean=[PIXEL_MEAN] * 3, std=[1.0 / PIXEL_SCALE] * 3,
                mirror=mirror)
            # A class id, or an array label whose element 0 is the class id.
            labels = fn.cast(labels[0], dtype=types.FLOAT)
            pipe.set_outputs(images, labels)
        pipe.build()
        return pipe

    def __len__(self):
        n = self.shard_size
        return n // self.batch_size if self.last_batch == "discard" else \
            -(-n // self.batch_size)

    def _ensure(self):
        """Build the pipeline if needed and run it to the current position."""
        if self._iter is not None:
            return
        epoch, batch = self._epoch, self._batch
        self._start()
        self._epoch, self._batch = 0, 0
        for _ in range(epoch * len(self) + batch):
            self._pull()

    def _pull(self):
        """The next batch of the stream (across epochs); moves the position."""
        for _ in range(2):
            try:
                batch = next(self._iter)
            except StopIteration:  # auto_reset: the next call starts an epoch
                self._epoch, self._batch = self._epoch + 1, 0
                continue
            self._batch += 1
            data, label = batch[0]
            return data, label
        raise RuntimeError("DaliFaceIter: an epoch without batches")

    def __iter__(self):
        self._ensure()
        for batch in self._iter:
            data, label = batch[0]
            self._batch += 1
            yield data, label
        self._epoch, self._batch = self._epoch + 1, 0

    def next_batch(self):
        """The next ``(data, label)``; after an epoch's last batch comes the
        next epoch's first."""
        self._ensure()
        return self._pull()

    @property
    def num_classes(self):
        """The dataset's number of classes (what a trainer's head needs)."""
        return int(self.dataset.num_classes)

    @property
    def epoch(self):
        """Epoch of the position (see :meth:`state_dict`)."""
        return self._epoch

    @property
    def batch(self):
        """Batch of the position (see :meth:`state_dict`)."""
        return self._batch

    def state_dict(self):
        """The position after the last batch handed out (JSON-serialisable)."""
        return {"epoch": self._epoch, "batch": self._batch, "seed": self.seed,
                "num_samples": self.shard_size, "batch_size": self.batch_size,
                "num_parts": self.num_shards, "part_index": self.shard_id}

    def load_state_dict(self, state):
        """Continue from a position saved by :meth:`state_dict`: rebuild the
        pipeline and run it forward to that position.

        Raises
        ------
        ValueError
            Without a ``seed`` (DALI's draws could not be repeated), or when
            the saved stream had another seed, shard size, batch size or
            sharding.
        """
        if self.seed is None:
            raise ValueError("DaliFaceIter(seed=None) cannot resume a position: "
                             "DALI's shuffle and mirror coins are repeatable only "
                             "from a given seed")
        epoch, batch = check_state(self, state, ("seed", "num_samples", "batch_size",
                                                 "num_parts", "part_index"))
        self.close()
        self._epoch, self._batch = epoch, batch
        self._ensure()

    def close(self):
        """Release the DALI pipeline and its threads (a later use builds a new
        one and runs it to the current position: the same stream when a
        ``seed`` was given)."""
        self._iter = None
        self._pipe = None

    def __repr__(self):
        return (f"DaliFaceIter({self.dataset.rec_path!r}, device={self.device!r}, "
                f"batch_size={self.batch_size}, shard {self.shard_id} of "
                f"{self.num_shards}: {self.shard_size} images)")
