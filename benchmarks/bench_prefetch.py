"""Training images/s with and without prefetching the RecordIO batches, in one run.

Writes a synthetic InsightFace-layout set (112x112 JPEG faces,
:func:`fr_lib.data.write_dataset`) to a temporary directory and runs the
trainer's inner loop -- ``X, y = data.next_batch(); trainer.train_step(X, y)``,
exactly what :meth:`fr_lib.train.FaceTrainer.fit` does per iteration -- with
two data sources over the same set, alternating every round:

- ``RecordBatches(prefetch=0)``: each batch is read and decoded when the
  trainer asks for it (the trainer waits for the decoder);
- ``RecordBatches(prefetch=2)``: the batches are made in a background thread
  (:class:`fr_lib.data.Prefetcher`) while the trainer computes.

For reference it also times the two halves alone in the same rounds: the data
source (``next_batch()`` only) and the training step (the same batch again).
Without overlap a step costs about decode + compute; with full overlap about
max(decode, compute). Figures are medians over rounds; the ratio is what to
compare across machines (CPU cores are shared between decoding and compute).

On a CPU-only machine the step keeps every core busy, so the decoder can only
use what the step leaves idle. The last two rows therefore repeat the loop
with an *emulated accelerator step*: the host sleeps for as long as one batch
takes to decode (measured in the same round), as it waits for a GPU step, so
the ideal gain of overlapping is 2x.

    .venv/bin/python benchmarks/bench_prefetch.py [--backbone quickfacenet]
        [--batch 64] [--steps 12] [--rounds 3] [--decode-threads 0]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import fr_lib  # noqa: F401  (first: it sets the thread count before MXNet loads)
import mxnet as mx  # noqa: F401

from fr_lib.data import write_dataset
from fr_lib.data.recordio import RecordBatches
from fr_lib.train import FaceTrainer, TrainConfig


def rate(fn, steps, batch):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * batch / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="quickfacenet")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode-threads", type=int, default=0)
    ap.add_argument("--identities", type=int, default=40)
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-prefetch-")
    data_dir = os.path.join(tmp, "faces")
    write_dataset(data_dir, num_identities=args.identities, images_per_identity=20,
                  num_val_pairs=0, seed=0)
    sources = {p: RecordBatches(data_dir, batch_size=args.batch, seed=0,
                                decode_threads=args.decode_threads, prefetch=p)
               for p in (0, 2)}
    cfg = TrainConfig(backbone=args.backbone, num_classes=args.identities,
                      loss="arcface", batch_size=args.batch, max_iters=10 ** 6,
                      lr=0.01, checkpoint_every=0, verify_every=0, progress=False,
                      out_dir=os.path.join(tmp, "run"), reseed_every_step=False)
    trainer = FaceTrainer(cfg, sources[0])
    X, y = sources[0].next_batch()
    trainer.train_step(X, y)  # builds the graph

    def loop(source):
        def step():
            Xb, yb = source.next_batch()
            trainer.train_step(Xb, yb)
        return step

    rows = {"prefetch=0 (decode, then step)": [], "prefetch=2 (overlapped)": [],
            "data only (next_batch, prefetch=0)": [], "step only (same batch)": [],
            "emulated step, prefetch=0": [], "emulated step, prefetch=2": []}

    def emulated(source, seconds):
        def step():
            source.next_batch()
            time.sleep(seconds)  # the host waits for the device
        return step

    for r in range(args.rounds):
        rows["prefetch=0 (decode, then step)"].append(rate(loop(sources[0]), args.steps,
                                                           args.batch))
        rows["prefetch=2 (overlapped)"].append(rate(loop(sources[2]), args.steps,
                                                    args.batch))
        rows["data only (next_batch, prefetch=0)"].append(
            rate(sources[0].next_batch, args.steps, args.batch))
        rows["step only (same batch)"].append(
            rate(lambda: trainer.train_step(X, y), args.steps, args.batch))
        wait = args.batch / rows["data only (next_batch, prefetch=0)"][-1]
        for p in (0, 2):
            rows[f"emulated step, prefetch={p}"].append(
                rate(emulated(sources[p], wait), args.steps * 4, args.batch))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for source in sources.values():
        source.close()

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{args.backbone} + arcface, batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds, decode_threads={args.decode_threads}, "
          f"engine={trainer.engine}, os.cpu_count()={os.cpu_count()}")
    for k, v in med.items():
        print(f"  {k:38s} {v:8.1f} img/s   rounds: "
              + ", ".join(f"{x:.1f}" for x in rows[k]))
    d, c = med["data only (next_batch, prefetch=0)"], med["step only (same batch)"]
    serial, ideal = 1 / (1 / d + 1 / c), min(d, c)
    print(f"  expected without overlap 1/(1/data + 1/step) = {serial:.1f} img/s; "
          f"with full overlap min(data, step) = {ideal:.1f} img/s")
    real = med["prefetch=2 (overlapped)"] / med["prefetch=0 (decode, then step)"]
    emul = med["emulated step, prefetch=2"] / med["emulated step, prefetch=0"]
    print(f"  ratio prefetch=2 / prefetch=0: {real:.2f} (training step); "
          f"{emul:.2f} (emulated accelerator step, ideal 2)")

if __name__ == "__main__":
    main()
