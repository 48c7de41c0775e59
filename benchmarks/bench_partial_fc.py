"""Partial FC (sample rate 0.1) vs the full normalised FC at growing class counts (CPU).

One training step of the classifier, both variants with the same margin loss
(ArcFace by default) and the same optimizer (SGD, momentum 0.9, wd 5e-4):

- full: ``NormDense`` (hybridized, static memory) + loss, backward to the
  embeddings and the whole class-centre matrix, ``gluon.Trainer.step``;
- full_l2n: the same with the L2 normalisations done by MXNet's fused
  ``L2Normalization`` op (as PartialFC does), so the partial/full ratio is
  not flattered by NormDense's four-op normalisation;
- partial: ``fr_lib.train.partial_fc.PartialFC`` on one context: sample the
  positives + negatives, gather those rows, cosines + loss, backward, lazy
  row-sparse SGD update of the sampled rows only.

The embeddings are fixed random vectors that record a gradient (as a
backbone's output would); the labels cycle through 8 random batches, so the
sampled set changes every step. The issue's goal: at >= 200k classes Partial FC
at 0.1 is faster and smaller than the full FC.

Time: both variants run alternately in one process (round robin, ``--repeat``
rounds after two warm-up steps each), so a noisy neighbour slows both alike;
the table shows the fastest and the median round and the partial/full ratios.
For class counts where both would not fit together (``--separate-above``)
each variant is timed in its own process, one after the other.
Memory: each variant runs again in a fresh process that reports
``peak RSS - RSS before building the head`` (``ru_maxrss`` after three steps
minus ``/proc/self/statm`` after the imports and the input batch): the class
centres, the momentum, the gradients, the logits and MXNet's pooled
workspace, everything the classifier costs. The ``logits MB`` column is the
analytical size of one (batch x used classes) float32 matrix.

    .venv/bin/python benchmarks/bench_partial_fc.py [--classes 10000 50000 200000]
        [--batch 128] [--dim 512] [--rate 0.1] [--loss arcface] [--repeat 5]
        [--no-memory] [--separate-above 500000]
"""
import argparse
import json
import os
import subprocess
import sys

from _common import median, run  # benchmarks/ is on sys.path

SETUP = r"""
import resource, sys, time
import fr_lib, mxnet as mx, numpy as np
from mxnet import autograd, gluon
from fr_lib.model_zoo import NormDense
from fr_lib.train.partial_fc import PartialFC

class FusedNormDense(NormDense):
    # same formula x / sqrt(sum(x^2) + eps), one op forward and backward
    def _normalize(self, F, x):
        return F.L2Normalization(x, eps=self._eps, mode="instance")

def inputs(batch, dim, classes, seed=0):
    mx.random.seed(seed)
    x = mx.nd.random.normal(shape=(batch, dim))
    x.attach_grad()
    rng = np.random.RandomState(seed)
    labels = [mx.nd.array(rng.randint(0, classes, batch)) for _ in range(8)]
    mx.nd.waitall()
    return x, labels

def build(variant, x, labels, classes, loss_name, rate):
    dim = x.shape[1]
    opt = {"learning_rate": 0.1, "momentum": 0.9, "wd": 5e-4}
    loss = fr_lib.get_loss(loss_name)
    loss.hybridize(static_alloc=True)
    it = [0]
    if variant.startswith("full"):
        head = (NormDense if variant == "full" else FusedNormDense)(classes, in_units=dim)
        head.initialize(mx.init.Normal(0.01))
        head.hybridize(static_alloc=True, static_shape=True)
        trainer = gluon.Trainer(head.collect_params(), "sgd", opt)

        def step():
            y = labels[it[0] % len(labels)]; it[0] += 1
            with autograd.record():
                out = loss(head(x), y).mean()
            out.backward()
            trainer.step(1)
            mx.nd.waitall()
        return step, classes
    pfc = PartialFC(classes, dim, loss, sample_rate=rate, seed=0, **opt)

    def step():
        y = labels[it[0] % len(labels)]; it[0] += 1
        with autograd.record():
            out = pfc(x, y).mean()
        out.backward()
        pfc.step(1)
        mx.nd.waitall()
    return step, sum(pfc.num_sample)
"""

TIME_WORKER = SETUP + r"""
import json
a = json.loads(sys.argv[1])
x, labels = inputs(a["batch"], a["dim"], a["classes"])
steps = {v: build(v, x, labels, a["classes"], a["loss"], a["rate"])[0]
         for v in a["variants"]}
for step in steps.values():      # warm up: shapes, allocator pools, the lazy-update log
    step(); step()
times = {v: [] for v in steps}
for _ in range(a["repeat"]):
    for v, step in steps.items():
        t = time.perf_counter(); step(); times[v].append(time.perf_counter() - t)
print(json.dumps(times))
"""

MEMORY_WORKER = SETUP + r"""
import json

a = json.loads(sys.argv[1])
x, labels = inputs(a["batch"], a["dim"], a["classes"])
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
step, cols = build(a["variants"][0], x, labels, a["classes"], a["loss"], a["rate"])
step(); step(); step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak, "cols": cols}))
"""

VARIANTS = ("full", "full_l2n", "partial")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10000, 50000, 200000])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--loss", default="arcface")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--separate-above", type=int, default=500000,
                        help="time each variant in its own process above this many "
                             "classes (both together would not fit in memory)")
    args = parser.parse_args()

    print(f"batch {args.batch}, embedding {args.dim}, loss {args.loss}, sample rate "
          f"{args.rate}, CPU threads "
          f"{os.environ.get('OMP_NUM_THREADS', len(os.sched_getaffinity(0)))}, "
          f"{args.repeat} rounds")
    print(f"{'classes':>9} {'variant':<9}{'best ms':>9}{'ratio':>7}{'median ms':>11}"
          f"{'ratio':>7}{'train MB':>10}{'ratio':>7}{'logits MB':>11}")
    goal = {}
    for classes in args.classes:
        payload = dict(variants=list(VARIANTS), batch=args.batch, dim=args.dim,
                       classes=classes, loss=args.loss, rate=args.rate,
                       repeat=args.repeat)
        if classes > args.separate_above:
            times = {}
            for v in VARIANTS:
                times.update(run(TIME_WORKER, dict(payload, variants=[v])))
        else:
            times = run(TIME_WORKER, payload)
        memory, cols = {}, {"full": classes, "full_l2n": classes, "partial": None}
        if not args.no_memory:
            for v in VARIANTS:
                m = run(MEMORY_WORKER, dict(payload, variants=[v]))
                memory[v] = m["peak"] - m["before"]
                cols[v] = m["cols"]
        for v in VARIANTS:
            best, med = min(times[v]) * 1e3, median(times[v]) * 1e3
            r_best = best / (min(times["full"]) * 1e3)
            r_med = med / (median(times["full"]) * 1e3)
            mem = memory.get(v)
            r_mem = mem / memory["full"] if mem else float("nan")
            logits = (f"{args.batch * cols[v] * 4 / 2**20:11.1f}" if cols[v]
                      else f"{'':>11}")
            print(f"{classes:9,d} {v:<9}{best:9.1f}{r_best:7.2f}{med:11.1f}{r_med:7.2f}"
                  f"{(mem or 0) / 2**20:10.0f}{r_mem:7.2f}{logits}")
        # the goal holds against the faster and the smaller of the two full FCs
        t_full = min(min(times[v]) for v in VARIANTS[:2])
        t_ok = min(times["partial"]) < t_full
        m_ok = not memory or memory["partial"] < min(memory[v] for v in VARIANTS[:2])
        goal[classes] = (t_ok, m_ok)
        if memory:
            print(f"{'':9} partial / full_l2n: best time "
                  f"{min(times['partial']) / min(times['full_l2n']):.2f}, memory "
                  f"{memory['partial'] / memory['full_l2n']:.2f}")
    big = {c: g for c, g in goal.items() if c >= 200000}
    if big:
        met = all(t and m for t, m in big.values())
        print(f"\ngoal (>= 200k classes: partial faster and smaller than both full "
              f"FCs): "
              f"{'met' if met else 'missed'} "
              + ", ".join(f"{c:,}: time {'ok' if t else 'NO'}, memory "
                          f"{'ok' if m else 'NO'}" for c, (t, m) in big.items()))


if __name__ == "__main__":
    main()
