"""MXNet's default OpenMP threads vs one thread per core, measured in one run.

MXNet 1.9.1 uses half the cores by default. Each setting runs in its own
process (OMP_NUM_THREADS must be set before MXNet loads) and times a LeNet++
forward+backward step (batch 64, 28x28) and a 512x512 float32 GEMM.

    .venv/bin/python benchmarks/bench_threads.py [--repeat 20]
"""
import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import fr_lib, mxnet as mx
from mxnet import autograd, gluon
repeat = int(sys.argv[1])
net = fr_lib.get_model('lenetpp', embedding_size=2)
net.initialize(mx.init.Xavier()); net.hybridize()
loss = gluon.loss.L2Loss()
X, y = mx.nd.random.uniform(shape=(64, 1, 28, 28)), mx.nd.zeros((64, 2))
def step():
    with autograd.record():
        l = loss(net(X), y)
    l.backward(); mx.nd.waitall()
A = mx.nd.random.uniform(shape=(512, 512))
def gemm():
    mx.nd.dot(A, A).wait_to_read()
out = {}
for name, fn in [('lenetpp_step', step), ('gemm512', gemm)]:
    fn(); fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    out[name] = (time.perf_counter() - t) / repeat
print(json.dumps(out))
"""


def measure(threads, repeat):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", WORKER, str(repeat)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cores = os.cpu_count()
    base = measure(None, args.repeat)
    tuned = measure(cores, args.repeat)
    print(f"cores: {cores}, repeat: {args.repeat}")
    print(f"{'workload':<14}{'default (s)':>13}{'OMP=' + str(cores) + ' (s)':>13}{'speed-up':>10}")
    for name in base:
        print(f"{name:<14}{base[name]:>13.4f}{tuned[name]:>13.4f}"
              f"{base[name] / tuned[name]:>9.2f}x")


if __name__ == "__main__":
    main()
