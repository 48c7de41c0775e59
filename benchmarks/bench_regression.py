"""Training throughput of every backbone: this checkout against an earlier commit.

Issue 16 reshaped the trainer (the objective layer, one loop, the data-source
protocol, the trainer's own randomness). Its goal 5 is that no backbone trains
slower afterwards. This benchmark measures exactly that, in one run:

- the baseline is ``fr_lib/src`` of ``--baseline`` (default ``a9ac90d``, the
  last commit before any issue-16 change), taken with ``git archive`` into a
  temporary folder;
- for every backbone registered in both versions (``get_model_list()``),
  each version times :meth:`FaceTrainer.train_step` (ArcFace, 1000 classes,
  one CPU context, the default engine, batch ``--batch``) in its own
  process, on the same random batch;
- after two untimed warm-up steps, each process times ``--steps`` steps
  one by one; its figure is the batch over the median step time;
- baseline and current alternate, ``--rounds`` times per backbone, so that
  both see the same machine; the best round of each is kept (a noisy
  neighbour only ever slows a round down).

It prints img/s of both and the ratio current / baseline per backbone. Native
operators are compiled (and cached, one cache key per source) by the first
process of each version; that first build lands in the warm-up steps, which
are not timed. Usage::

    .venv/bin/python benchmarks/bench_regression.py [--baseline a9ac90d]
        [--current COMMIT] [--models mobilefacenet iresnet50 ...] [--batch 16] [--steps 5] [--rounds 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a child process with PYTHONPATH pointing at one version's sources.
# It speaks both versions' TrainConfig: the device and thread options were
# renamed by issue 16 (contexts -> ctx), so only known fields are passed.
CHILD = r"""
import dataclasses, json, sys, tempfile, time
import numpy as np
import fr_lib
import mxnet as mx
from fr_lib.train import ArrayBatches, FaceTrainer, TrainConfig
model, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fields = {f.name for f in dataclasses.fields(TrainConfig)}
options = dict(backbone=model, num_classes=1000, loss="arcface", batch_size=batch,
               max_iters=10 ** 6, lr=0.01, checkpoint_every=0, verify_every=0,
               progress=False, out_dir=tempfile.mkdtemp(prefix="bench-regr-"))
options["ctx" if "ctx" in fields else "contexts"] = ["cpu(0)"]
cfg = TrainConfig(**{k: v for k, v in options.items() if k in fields})
rng = np.random.RandomState(0)
X = rng.uniform(-1, 1, size=(batch, 3, 112, 112)).astype("float32")
y = rng.randint(0, 1000, size=batch)
trainer = FaceTrainer(cfg, ArrayBatches(X, y, batch))
xb, yb = mx.nd.array(X), mx.nd.array(y)
for _ in range(2):  # warm-up: graph building, native operators, allocations
    trainer.train_step(xb, yb)
    mx.nd.waitall()
times = []
for _ in range(steps):
    start = time.perf_counter()
    trainer.train_step(xb, yb)
    mx.nd.waitall()
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"img_s": batch / float(np.median(times)),
                              "engine": str(getattr(trainer, "engine", "?"))}))
"""

LIST = ("import json, fr_lib; from fr_lib.model_zoo import get_model_list; "
        "print('RESULT ' + json.dumps(get_model_list()))")


def extract(commit):
    """``fr_lib/src`` of ``commit`` in a temporary folder; its path."""
    out = tempfile.mkdtemp(prefix=f"fr-baseline-{commit}-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "fr_lib/src"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return os.path.join(out, "fr_lib", "src")


def run(src, code, *args):
    """Run ``code`` with ``src`` first on the path; its RESULT line, decoded."""
    env = dict(os.environ, PYTHONPATH=src, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{src}: {' '.join(map(str, args))} failed:\n"
                       f"{proc.stderr[-2000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default="a9ac90d")
    p.add_argument("--current", default=None,
                   help="a commit to compare instead of this checkout's sources")
    p.add_argument("--models", nargs="*")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    versions = {"baseline": extract(a.baseline),
                "current": extract(a.current) if a.current
                else os.path.join(ROOT, "fr_lib", "src")}
    names = {v: set(run(src, LIST)) for v, src in versions.items()}
    models = a.models or sorted(names["baseline"] & names["current"])
    for v in versions:
        only = sorted(names[v] - names["baseline" if v == "current" else "current"])
        if only and not a.models:
            print(f"only in {v}: {', '.join(only)} (not compared)")
    print(f"baseline {a.baseline} vs current ({a.current or ROOT}); batch {a.batch}, "
          f"median of {a.steps} timed steps, best of {a.rounds} alternating rounds; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'backbone':<24}{'baseline img/s':>16}{'current img/s':>15}"
          f"{'ratio':>8}  engines")
    ratios = []
    for model in models:
        best, engines = {}, {}
        for _ in range(a.rounds):
            for v, src in versions.items():
                r = run(src, CHILD, model, a.batch, a.steps)
                best[v] = max(best.get(v, 0.0), r["img_s"])
                engines[v] = r["engine"]
        ratio = best["current"] / best["baseline"]
        ratios.append(ratio)
        print(f"{model:<24}{best['baseline']:>16.2f}{best['current']:>15.2f}"
              f"{ratio:>8.2f}  {engines['baseline']} / {engines['current']}",
              flush=True)
    if ratios:
        geo = float(__import__("numpy").exp(__import__("numpy").log(ratios).mean()))
        print(f"geometric mean ratio {geo:.3f} over {len(ratios)} backbones; "
              f"lowest {min(ratios):.2f}; load {os.getloadavg()[0]:.1f} at the end "
              f"({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
