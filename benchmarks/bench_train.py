"""Training throughput on CPU and model-FLOP utilisation (MFU).

For MobileFaceNet + ArcFace and IResNet-50 + ArcFace at 112x112, batch 64
and 16, with one CPU context and with two (the batch split over them), this
times :meth:`fr_lib.train.FaceTrainer.train_step` -- the package's real
training step: forward, margin loss, backward, SGD-momentum update, NaN
guard -- and, alternating with it in the same process, a float32 GEMM
(``mx.nd.dot`` of two 2048x2048 matrices). Each configuration runs with the
trainer's default engine (for MobileFaceNet on CPU: ``'native'``, the
channels-last operators of :class:`fr_lib.model_zoo.NativeTrainingView`;
for IResNet-50, which has no native view, ``'blocks'``: MXNet's backbone
with its PReLUs and the loss in their native forms, :mod:`fr_lib.native`)
and, as the baseline, with ``engine='mxnet'`` (MXNet's operators only). It
prints images/s and

    MFU = images/s x 3 x forward FLOPs per image / GEMM FLOP/s,

counting a multiply-add as 2 FLOPs (forward FLOPs from
:func:`fr_lib.model_zoo.count_flops`) and a training step as 3 forward
passes. Usage::

    .venv/bin/python benchmarks/bench_train.py [--models mobilefacenet mobilefacenet_512 iresnet50]
        [--batches 64 16] [--contexts 1 2] [--engines auto mxnet] [--steps 3]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np


def timed(fn, min_time, min_calls=1):
    fn()  # warm-up (first call builds the graph)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_time:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def measure(model, batch, num_ctx, steps, engine="auto", gemm_n=2048):
    import fr_lib  # noqa: F401  first: it sets OMP_NUM_THREADS before MXNet loads
    import mxnet as mx
    from fr_lib.model_zoo import count_flops, get_model
    from fr_lib.native import native_blocks
    from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig

    classes = 1000
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(batch * 2, 3, 112, 112)).astype("float32")
    y = rng.randint(0, classes, size=batch * 2)
    cfg = TrainConfig(backbone=model, num_classes=classes, loss="arcface",
                      ctx=[f"cpu({i})" for i in range(num_ctx)],
                      kvstore="device" if num_ctx > 1 else None,
                      batch_size=batch, max_iters=10 ** 6, lr=0.01,
                      checkpoint_every=0, verify_every=0, progress=False,
                      out_dir=tempfile.mkdtemp(prefix="bench-train-"),
                      reseed_every_step=False, engine=engine)
    trainer = FaceTrainer(cfg, ArrayBatches(X, y, batch))
    xb, yb = mx.nd.array(X[:batch]), mx.nd.array(y[:batch])

    def step():
        trainer.train_step(xb, yb)
        mx.nd.waitall()

    a = mx.nd.random.uniform(shape=(gemm_n, gemm_n))
    b = mx.nd.random.uniform(shape=(gemm_n, gemm_n))

    def gemm():
        mx.nd.dot(a, b).wait_to_read()

    flops = 2 * count_flops(get_model(model))
    img_s, gemm_rate = [], []
    for _ in range(2):   # alternate, so both see the same neighbours
        img_s.append(timed(step, 0, min_calls=steps) * batch)
        gemm_rate.append(timed(gemm, 0.5) * 2 * gemm_n ** 3)
    img, g = max(img_s), max(gemm_rate)
    used = trainer.engine
    if used == "mxnet" and native_blocks(trainer._step_net):
        used = "blocks"  # MXNet backbone, native PReLUs and loss (fr_lib.native)
    return img, g, img * 3 * flops / g, flops, used


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilefacenet", "mobilefacenet_512",
                                                        "iresnet50"])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 16])
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=["auto", "mxnet"],
                        help="TrainConfig.engine values to time ('mxnet' is the baseline)")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps per measurement (after one warm-up)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fr_lib", "src"))
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(fr_lib default)')}, "
          f"load average {os.getloadavg()[0]:.2f} (other processes make figures noisy)")
    header = (f"{'model':<14}{'batch':>6}{'ctx':>5}{'engine':>8}{'GFLOPs fwd':>11}"
              f"{'img/s':>9}{'GEMM GFLOP/s':>14}{'MFU':>8}{'vs mxnet':>10}")
    print(header)
    print("-" * len(header))
    import fr_lib  # noqa: F401  first: it sets OMP_NUM_THREADS before MXNet loads
    results = {}
    for model in args.models:
        # 'auto' is the native view where the backbone has one (MobileFaceNet),
        # else MXNet's backbone with native PReLUs and loss ('blocks')
        engines = args.engines
        for batch in args.batches:
            for n in args.contexts:
                base = None
                for engine in sorted(engines, key=lambda e: e != "mxnet"):
                    img, g, mfu, flops, used = measure(model, batch, n, args.steps,
                                                       engine=engine)
                    base = img if engine == "mxnet" else base
                    results[(model, batch, n, used)] = mfu
                    ratio = f"{img / base:>9.2f}x" if base else f"{'':>10}"
                    print(f"{model:<14}{batch:>6}{n:>5}{used:>8}{flops / 1e9:>11.2f}"
                          f"{img:>9.1f}{g / 1e9:>14.1f}{mfu:>8.1%}{ratio}", flush=True)
    goals = {"mobilefacenet": 0.35, "mobilefacenet_512": 0.50, "iresnet50": 0.65}
    for model, goal in goals.items():
        for engine in ("mxnet", "blocks", "native"):
            best = [v for (m, _, _, e), v in results.items() if m == model and e == engine]
            if best:
                print(f"{model} ({engine}): best MFU {max(best):.1%} (goal >= {goal:.0%}): "
                      f"{'met' if max(best) >= goal else 'missed'}")


if __name__ == "__main__":
    main()
