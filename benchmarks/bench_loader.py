"""Images/s of fr_lib's RecordIO batch path vs mx.io.ImageRecordIter, in one run.

Builds a rec of 5,000 synthetic 112x112 JPEG faces-to-be (smooth random colour
fields, so they compress like photos) in a temporary directory, then measures,
alternating between the loaders every round:

- ``fr_lib FaceRecordIter`` with 0 and 2 decoding threads;
- ``mx.io.ImageRecordIter`` with ``preprocess_threads`` 1 and 2 (the baseline);
- (reference) the per-sample Gluon path: ``FaceRecordDataset`` + transform +
  ``gluon.data.DataLoader``, one epoch only;
- NVIDIA DALI's CPU pipeline (``fr_lib.data.DaliFaceIter``, DALI 1.35 MXNet
  reader, decoding in DALI's own threads), when DALI is installed.

Every loader does the same work: read, decode, random mirror, (x - 127.5)/128
into float32 NCHW batches of 128, shuffled. Figures are the median over rounds.

Note: ImageRecordIter logs how many decoding threads it really uses; on a
2-core machine it logs "use 1 threads for decoding" for preprocess_threads=2
as well, so its two rows differ only by noise there.

    nice .venv/bin/python benchmarks/bench_loader.py [--images 5000] [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import fr_lib  # noqa: F401  (makes mxnet importable; must come first)
import mxnet as mx
from mxnet import gluon

from fr_lib.data.recordio import FaceRecordDataset, FaceRecordIter, write_face_rec
from fr_lib.data.transforms import normalize_batch

BATCH = 128


def synthetic_items(n, size=112, per_class=10, seed=0):
    """(label, uint8 RGB image) pairs: smooth colour fields plus a little noise."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        a = rng.uniform(0, 6, size=(3, 4))
        img = np.stack([127 + 100 * np.sin(a[c, 0] * xx + a[c, 1] * yy + a[c, 2])
                        * np.cos(a[c, 3] * (xx - yy)) for c in range(3)], -1)
        img += rng.normal(0, 6, img.shape)
        yield i // per_class, np.clip(img, 0, 255).astype(np.uint8)


def epoch_fr(ds, workers):
    it = FaceRecordIter(ds, batch_size=BATCH, shuffle=True, rand_mirror=True,
                        num_workers=workers, seed=1)
    n = 0
    t = time.perf_counter()
    for data, label in it:
        data.wait_to_read()
        n += data.shape[0]
    dt = time.perf_counter() - t
    it.close()
    return n / dt


def make_mx_iter(rec, idx, threads):
    return mx.io.ImageRecordIter(
        path_imgrec=rec, path_imgidx=idx, data_shape=(3, 112, 112),
        batch_size=BATCH, shuffle=True, rand_mirror=True,
        mean_r=127.5, mean_g=127.5, mean_b=127.5, std_r=128, std_g=128, std_b=128,
        preprocess_threads=threads, round_batch=False, seed=1)


def epoch_mx(it):
    it.reset()
    n = 0
    t = time.perf_counter()
    for batch in it:
        batch.data[0].wait_to_read()
        n += batch.data[0].shape[0] - batch.pad
    return n / (time.perf_counter() - t)


def epoch_gluon_per_sample(ds):
    def transform(img, label):
        img = mx.nd.flip(img, axis=1) if np.random.rand() < 0.5 else img
        return normalize_batch(img), label
    ds = FaceRecordDataset(ds.rec_path, transform=transform, check=False)
    loader = gluon.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    n = 0
    t = time.perf_counter()
    for data, label in loader:
        data.wait_to_read()
        n += data.shape[0]
    return n / (time.perf_counter() - t)


def make_dali_iter(ds, threads):
    """DALI CPU pipeline over the same rec (None when DALI is not installed)."""
    from fr_lib.data.dali import DaliFaceIter, dali_available
    if not dali_available():
        return None
    return DaliFaceIter(ds, batch_size=BATCH, shuffle=True, rand_mirror=True,
                        seed=1, device="cpu", num_threads=threads)


def epoch_dali(it):
    n = 0
    t = time.perf_counter()
    for data, label in it:
        data.wait_to_read()
        n += data.shape[0]
    return n / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = write_face_rec(os.path.join(tmp, "plain"),
                              synthetic_items(args.images), layout="plain",
                              shuffle_seed=0)
        print(f"wrote {info['num_images']} images "
              f"({os.path.getsize(info['rec']) / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - t:.1f} s; cv2 decoding: "
              f"{fr_lib.data.transforms._cv2 is not None}")
        ds = FaceRecordDataset(info["rec"])
        mx_iters = {k: make_mx_iter(info["rec"], info["idx"], k) for k in (1, 2)}
        runs = {
            "fr_lib FaceRecordIter, 0 workers": lambda: epoch_fr(ds, 0),
            "fr_lib FaceRecordIter, 2 workers": lambda: epoch_fr(ds, 2),
            "mx.io.ImageRecordIter, 1 thread": lambda: epoch_mx(mx_iters[1]),
            "mx.io.ImageRecordIter, 2 threads": lambda: epoch_mx(mx_iters[2]),
        }
        dali_iters = {k: make_dali_iter(ds, k) for k in (1, 2)}
        if dali_iters[1] is not None:
            runs["DALI CPU pipeline, 1 thread"] = \
                lambda: epoch_dali(dali_iters[1])
            runs["DALI CPU pipeline, 2 threads"] = \
                lambda: epoch_dali(dali_iters[2])
        for fn in runs.values():  # warm the page cache and the pools
            fn()
        results = {k: [] for k in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                results[name].append(fn())
        med = {k: statistics.median(v) for k, v in results.items()}
        med["gluon per-sample DataLoader (reference, 1 epoch)"] = \
            epoch_gluon_per_sample(ds)
        for name, v in med.items():
            print(f"{name:50s} {v:8.0f} img/s")
        if dali_iters[1] is None:
            print(f"{'DALI CPU pipeline (not installed)':50s}        -")
        base1 = med["mx.io.ImageRecordIter, 1 thread"]
        base2 = med["mx.io.ImageRecordIter, 2 threads"]
        print("ratios (goal >= 0.8):")
        print(f"  0 workers / ImageRecordIter 1 thread : "
              f"{med['fr_lib FaceRecordIter, 0 workers'] / base1:.2f}")
        print(f"  2 workers / ImageRecordIter 2 threads: "
              f"{med['fr_lib FaceRecordIter, 2 workers'] / base2:.2f}")
        print(f"  per-sample / ImageRecordIter 1 thread: "
              f"{med['gluon per-sample DataLoader (reference, 1 epoch)'] / base1:.2f}")
        if dali_iters[1] is not None:
            print("ratios (goal >= 1.5):")
            print(f"  DALI CPU 1 thread / ImageRecordIter 1 thread  : "
                  f"{med['DALI CPU pipeline, 1 thread'] / base1:.2f}")
            print(f"  DALI CPU 2 threads / ImageRecordIter 2 threads: "
                  f"{med['DALI CPU pipeline, 2 threads'] / base2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
