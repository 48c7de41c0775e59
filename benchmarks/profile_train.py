"""Where a CPU training step's time goes, operator by operator.

Runs :meth:`fr_lib.train.FaceTrainer.train_step` (default: MobileFaceNet +
ArcFace, batch 64, one CPU context, ``engine='auto'``, i.e. the native
training view) under MXNet's profiler and prints the operators sorted by
total time, with their share of the profiled time and the share of all
forward multiply-adds each operator family performs (from the model's
layers). Usage::

    .venv/bin/python benchmarks/profile_train.py [--model mobilefacenet]
        [--batch 64] [--steps 4] [--engine auto]

Profiles are noisy on a shared machine: compare shares within one run.
"""
import argparse
import os
import tempfile

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilefacenet")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    import fr_lib  # noqa: F401  first: it sets OMP_NUM_THREADS before MXNet loads
    import mxnet as mx
    from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig

    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (args.batch, 3, 112, 112)).astype("float32")
    y = rng.randint(0, 1000, args.batch)
    cfg = TrainConfig(backbone=args.model, num_classes=1000, loss="arcface",
                      ctx=["cpu(0)"], kvstore=None, batch_size=args.batch,
                      max_iters=10 ** 6, checkpoint_every=0, verify_every=0,
                      progress=False, reseed_every_step=False, engine=args.engine,
                      out_dir=tempfile.mkdtemp(prefix="profile-train-"))
    trainer = FaceTrainer(cfg, ArrayBatches(X, y, args.batch))
    xb, yb = mx.nd.array(X), mx.nd.array(y)
    for _ in range(2):  # warm-up: graphs, memory plans
        trainer.train_step(xb, yb)
    mx.nd.waitall()

    trace = os.path.join(tempfile.mkdtemp(prefix="profile-train-"), "profile.json")
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=trace)
    mx.profiler.set_state("run")
    for _ in range(args.steps):
        trainer.train_step(xb, yb)
    mx.nd.waitall()
    mx.profiler.set_state("stop")
    table = mx.profiler.dumps(format="json", sort_by="total", ascending=False)
    import json
    stats = json.loads(table)
    rows = []
    for domain, ops in stats.get("Time", {}).items():
        if "operator" not in domain.lower():
            continue
        for name, st in ops.items():
            rows.append((name, st["Count"], st["Total"]))
    total = sum(t for _, _, t in rows) or 1.0
    print(f"{args.model}, batch {args.batch}, engine {trainer.engine}, {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'operator':<40}{'calls':>8}{'ms/step':>10}{'share':>8}")
    for name, count, t in sorted(rows, key=lambda r: -r[2])[:args.top]:
        print(f"{name:<40}{count // args.steps:>8}{t / args.steps:>10.1f}"
              f"{t / total:>8.1%}")
    print(f"{'all operators':<40}{'':>8}{total / args.steps:>10.1f}")


if __name__ == "__main__":
    main()
