"""Decoding a batch of RecordIO images: ``FaceBatchify`` (OpenCV in helper
threads, mirror, the pixel convention of :mod:`fr_lib.data.transforms`)."""
import concurrent.futures
import os

import numpy as np
import mxnet as mx

from ..transforms import decode_image_bgr, _normalize_bgr_into
from .format import BadImageError

__all__ = ["FaceBatchify"]


class FaceBatchify:
    """Decode, mirror and normalise a list of :class:`RawRecord` into one batch.

    Usable as ``batchify_fn`` of a ``gluon.data.DataLoader`` over
    ``dataset.raw()``, and used by :class:`FaceRecordIter`. Decoding uses
    OpenCV in ``num_threads`` helper threads (it releases the GIL); the file is
    never read from these threads.

    Parameters
    ----------
    image_size : tuple (height, width) or None
        Size every image must have; ``None`` takes the first image's.
    rand_mirror : bool
        Mirror each image with probability 1/2.
    normalize : bool
        ``True`` gives float32 NCHW in the pixel convention of
        :mod:`fr_lib.data.transforms`; ``False`` gives uint8 NHWC RGB.
    num_threads : int
        Decoding threads (0: decode in the calling thread).
    skip_bad : bool
        Leave undecodable images out of the batch (listed in ``bad_records``)
        instead of raising :class:`BadImageError`.
    seed : int or None
        Seed of the mirror coin flips.
    """

    def __init__(self, image_size=None, rand_mirror=False, normalize=True,
                 num_threads=0, skip_bad=False, seed=None):
        self.image_size = tuple(image_size) if image_size else None
        self.rand_mirror = rand_mirror
        self.normalize = normalize
        self.num_threads = int(num_threads)
        self.skip_bad = skip_bad
        self.bad_records = []
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._pid = os.getpid()
        self._pool = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_pool"] = None
        return d

    def _check_process(self):
        if self._pid != os.getpid():  # a forked worker: own pool, own coins
            self._pid = os.getpid()
            self._pool = None
            self._rng = np.random.RandomState(
                None if self._seed is None else (self._seed + os.getpid()) % 2**32)

    def close(self):
        """Stop the decoding threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def flips(self, n):
        """Draw the mirror decisions for ``n`` images."""
        if not self.rand_mirror:
            return np.zeros(n, dtype=bool)
        return self._rng.randint(0, 2, size=n).astype(bool)

    def __call__(self, records):
        self._check_process()
        return self.decode(records, self.flips(len(records)))

    def decode(self, records, flips):
        """Decode ``records`` with the given mirror decisions: (data, label)."""
        return self.collect(self.submit(records, flips))

    def submit(self, records, flips):
        """Start decoding (in the pool if any); return a handle for ``collect``."""
        n = len(records)
        if self.image_size is None:
            if not n:
                raise ValueError("cannot make a batch from no records")
            for rec in records:  # the first decodable image sets the size
                first = decode_image_bgr(rec[0])
                if first is not None:
                    self.image_size = first.shape[:2]
                    break
        h, w = self.image_size or (0, 0)
        if self.normalize:
            out = np.empty((n, 3, h, w), dtype=np.float32)
        else:
            out = np.empty((n, h, w, 3), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        errors = [None] * n
        if self.num_threads > 0 and n > 1:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.num_threads, thread_name_prefix="fr_decode")
            chunks = np.array_split(np.arange(n), min(n, self.num_threads * 2))
            futures = [self._pool.submit(self._decode_range, records, flips, out,
                                         ok, errors, c[0], c[-1] + 1)
                       for c in chunks if len(c)]
        else:
            self._decode_range(records, flips, out, ok, errors, 0, n)
            futures = []
        return records, out, ok, errors, futures

    def collect(self, pending):
        records, out, ok, errors, futures = pending
        for f in futures:
            f.result()
        for i in np.flatnonzero(~ok).tolist():
            err = errors[i]
            if isinstance(err, BadImageError) and self.skip_bad:
                self.bad_records.append((records[i][2] if len(records[i]) > 2
                                         else None, str(err)))
                continue
            raise err
        if not ok.all():
            out = out[ok]
        labels = np.asarray([r[1] for r, good in zip(records, ok) if good],
                            dtype=np.float32)
        data = mx.nd.from_numpy(np.ascontiguousarray(out), zero_copy=True) \
            if len(out) else mx.nd.array(out, dtype=out.dtype)
        return data, mx.nd.array(labels, dtype=np.float32)

    def _decode_range(self, records, flips, out, ok, errors, lo, hi):
        for i in range(lo, hi):
            rec = records[i]
            img = decode_image_bgr(rec[0])
            if img is None or img.shape[:2] != self.image_size:
                ok[i] = False
                key = rec[2] if len(rec) > 2 else i
                source = (rec[3] + ": ") if len(rec) > 3 else ""
                if img is None:
                    errors[i] = BadImageError(
                        f"{source}record {key} holds {len(rec[0])} bytes that "
                        "are not a decodable image")
                else:
                    errors[i] = ValueError(
                        f"{source}record {key} is {img.shape[0]}x{img.shape[1]}, "
                        f"but the batch needs {self.image_size[0]}x"
                        f"{self.image_size[1]} (from property or the first image)")
                continue
            if self.normalize:
                _normalize_bgr_into(out[i], img, flip=bool(flips[i]))
            else:
                src = img[:, ::-1, ::-1] if flips[i] else img[:, :, ::-1]
                out[i] = src
