"""Margin losses vs plain softmax on the same normalised-FC head (CPU).

One training step = NormDense forward (embeddings and class weights
L2-normalised, cosine matrix out) + loss + backward to the embeddings and the
class weights. The baseline is gluon's SoftmaxCrossEntropyLoss on that same
cosine matrix. Every loss touches one logit per row, so the goal is at most
1.10x the baseline's time and 1.2x its peak memory.

Time: all variants run alternately in one process (round robin, ``--repeat``
rounds), so a noisy neighbour slows all of them alike; the table shows the
fastest and the median round and both ratios.
Memory: each variant runs again in a fresh process that reports the growth of
its peak resident set over the step (MXNet's pooled allocator keeps what a step
needed, so the growth is the step's peak working memory).

    .venv/bin/python benchmarks/bench_loss.py [--classes 10000 100000]
        [--batch 256] [--dim 512] [--repeat 5] [--losses arcface cosface ...]
"""
import argparse
import json
import os
import subprocess
import sys
import time

from _common import median, run  # benchmarks/ is on sys.path

# How each loss is fed: extra inputs and the FC width (sub-centre ArcFace
# has k columns per class, so its baseline, softmax@3x, is plain softmax over
# the same 3C-column FC).
SPECS = {
    "softmax": {},
    "softmax@3x": {"columns": 3},
    "normface": {},
    "cosface": {},
    "arcface": {},
    "combined": {"kwargs": {"m1": 1.0, "m2": 0.3, "m3": 0.2}},
    "sphereface": {},
    "subcenter_arcface": {"columns": 3},
    "curricularface": {},
    "magface": {"norm": True},
    "adaface": {"norm": True},
    "circle": {},
}

SETUP = r"""
import resource, sys, time
import fr_lib, mxnet as mx, numpy as np
from mxnet import autograd, gluon
from fr_lib.model_zoo import NormDense

def build(name, spec, batch, dim, classes, seed=0):
    mx.random.seed(seed)
    columns = classes * spec.get("columns", 1)
    head = NormDense(columns, in_units=dim)
    head.initialize(mx.init.Xavier())
    head.hybridize(static_alloc=True, static_shape=True)
    if name.startswith("softmax"):
        loss = gluon.loss.SoftmaxCrossEntropyLoss()
    else:
        loss = fr_lib.get_loss(name, **spec.get("kwargs", {}))
    loss.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.normal(shape=(batch, dim))
    x.attach_grad()
    label = mx.nd.array(np.random.RandomState(seed).randint(0, classes, batch))
    extra = []
    if spec.get("norm"):
        extra = [mx.nd.norm(x, axis=1) * 20]   # norms in MagFace's range

    def step():
        with autograd.record():
            out = loss(head(x), label, *extra).mean()
        out.backward()
        mx.nd.waitall()
    return step
"""

TIME_WORKER = SETUP + r"""
import json
args = json.loads(sys.argv[1])
steps = {n: build(n, args["specs"][n], args["batch"], args["dim"], args["classes"])
         for n in args["names"]}
for step in steps.values():      # warm up: shapes, allocator pools
    step(); step()
times = {n: [] for n in steps}
for _ in range(args["repeat"]):
    for n, step in steps.items():
        t = time.perf_counter(); step(); times[n].append(time.perf_counter() - t)
print(json.dumps(times))
"""

MEMORY_WORKER = SETUP + r"""
import json

args = json.loads(sys.argv[1])
n = args["names"][0]
step = build(n, args["specs"][n], args["batch"], args["dim"], args["classes"])
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
step(); step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--losses", nargs="+", default=None,
                        help="registered loss names (default: every one in SPECS)")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()

    import fr_lib  # noqa: F401  (only to list what is registered)
    registered = set(fr_lib.get_loss_list())
    names = [n for n in (args.losses or SPECS)
             if n.startswith("softmax") or n in registered]
    if "softmax" not in names:
        names.insert(0, "softmax")
    if "subcenter_arcface" in names and "softmax@3x" not in names:
        names.insert(1, "softmax@3x")
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        parser.error(f"no benchmark spec for {unknown}; known: {sorted(SPECS)}")
    specs = {n: SPECS[n] for n in names}
    print(f"batch {args.batch}, embedding {args.dim}, CPU threads "
          f"{os.environ.get('OMP_NUM_THREADS', len(os.sched_getaffinity(0)))}, "
          f"{args.repeat} alternating rounds")
    worst, worst_mem = {}, {}
    for classes in args.classes:
        payload = dict(names=names, specs=specs, batch=args.batch, dim=args.dim,
                       classes=classes, repeat=args.repeat)
        times = run(TIME_WORKER, payload)
        memory = {}
        if not args.no_memory:
            for n in names:
                m = run(MEMORY_WORKER, dict(payload, names=[n]))
                memory[n] = m["peak"] - m["before"]
        # each loss against plain softmax over an FC of the same width
        base_names = {n: ("softmax" if specs[n].get("columns", 1) == 1 else "softmax@3x")
                      for n in names}
        print(f"\n{classes:,} classes")
        print(f"{'loss':<19}{'best ms':>9}{'ratio':>7}{'median ms':>11}{'ratio':>7}"
              f"{'step MB':>9}{'ratio':>7}")
        for n in names:
            best, med = min(times[n]) * 1e3, median(times[n]) * 1e3
            b = base_names[n]
            r_best = best / (min(times[b]) * 1e3)
            r_med = med / (median(times[b]) * 1e3)
            mem = memory.get(n)
            r_mem = mem / memory[b] if mem else float("nan")
            worst[n] = max(worst.get(n, 0), r_best)
            if mem:
                worst_mem[n] = max(worst_mem.get(n, 0), r_mem)
            print(f"{n:<19}{best:9.1f}{r_best:7.2f}{med:11.1f}{r_med:7.2f}"
                  f"{(mem or 0) / 2**20:9.0f}{r_mem:7.2f}")
    over = {n: r for n, r in worst.items() if not n.startswith("softmax") and r > 1.10}
    print("\ngoal (best-round time <= 1.10x softmax):",
          "met by every loss" if not over else f"missed by {over}")
    over_mem = {n: r for n, r in worst_mem.items()
                if not n.startswith("softmax") and r > 1.20}
    if worst_mem:
        print("goal (peak step memory <= 1.2x softmax):",
              "met by every loss" if not over_mem else f"missed by {over_mem}")


if __name__ == "__main__":
    main()
