"""Inference speed of face backbones on CPU, and how much of the machine it uses.

For MobileFaceNet and IResNet-50 at batch 64 (hybridized), each setting below
runs in its own process, because OpenMP and subgraph settings must be fixed
before MXNet loads, and the settings are measured alternately, round after
round, so that a busy neighbour slows all of them alike:

- ``default``: MXNet's default OpenMP threads (half the cores), static
  memory (``static_alloc``/``static_shape``), fast PReLU;
- ``omp``: ``OMP_NUM_THREADS`` = number of cores;
- ``omp-passive``: also ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads
  sleep instead of spinning, which matters when other processes share the
  cores (one descheduled thread otherwise stalls the others at each barrier);
- ``omp+mkldnn``: also ``MXNET_SUBGRAPH_BACKEND=MKLDNN`` and
  ``hybridize(backend='MKLDNN')`` (fuses convolution, BN and ReLU);
- ``omp+mkldnn-nostatic``: as ``omp+mkldnn`` without static memory;
- ``omp+mkldnn-gluonprelu``: as ``omp+mkldnn`` with ``nn.PReLU``.

Each process also times a float32 GEMM (``mx.nd.dot`` of two square
matrices) with the same settings, so the report can say what fraction of the
machine's GEMM rate the network reaches: utilisation = images/s x forward
FLOPs per image / GEMM FLOP/s, with forward FLOPs = 2 x the multiply-adds of
:func:`fr_lib.model_zoo.count_flops`.

    nice -n 10 .venv/bin/python benchmarks/bench_inference.py [--rounds 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import fr_lib, mxnet as mx
from fr_lib.model_zoo import get_model

def timed(fn, min_time):
    fn()  # warm-up: graph building, memory planning, kernel selection
    n, start = 0, time.perf_counter()
    while True:
        fn(); n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n / elapsed

net = get_model(cfg['model'], fast_prelu=cfg['fast_prelu'])
net.initialize(mx.init.MSRAPrelu())
options = dict(static_alloc=cfg['static'], static_shape=cfg['static'])
if cfg['mkldnn']:
    options['backend'] = 'MKLDNN'
net.hybridize(**options)
x = mx.nd.random.uniform(-1, 1, shape=(cfg['batch'], 3, 112, 112))
batches_per_s = timed(lambda: net(x).wait_to_read(), cfg['min_time'])

n = cfg['gemm']
a = mx.nd.random.uniform(shape=(n, n))
b = mx.nd.random.uniform(shape=(n, n))
gemms_per_s = timed(lambda: mx.nd.dot(a, b).wait_to_read(), 1.0)
print(json.dumps({'img_s': batches_per_s * cfg['batch'],
                  'gemm_flops': gemms_per_s * 2 * n ** 3}))
"""

CORES = str(os.cpu_count())
SETTINGS = [
    # name, environment, MKLDNN subgraph, static memory, fast PReLU
    ("default", {}, False, True, True),
    ("omp", {"OMP_NUM_THREADS": CORES}, False, True, True),
    ("omp-passive", {"OMP_NUM_THREADS": CORES, "OMP_WAIT_POLICY": "PASSIVE"},
     False, True, True),
    ("omp+mkldnn", {"OMP_NUM_THREADS": CORES, "MXNET_SUBGRAPH_BACKEND": "MKLDNN"},
     True, True, True),
    ("omp+mkldnn-nostatic", {"OMP_NUM_THREADS": CORES,
                             "MXNET_SUBGRAPH_BACKEND": "MKLDNN"}, True, False, True),
    ("omp+mkldnn-gluonprelu", {"OMP_NUM_THREADS": CORES,
                               "MXNET_SUBGRAPH_BACKEND": "MKLDNN"}, True, True, False),
]
_CONTROLLED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MXNET_SUBGRAPH_BACKEND")


def measure(model, setting, args):
    name, extra_env, mkldnn, static, fast = setting
    env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED}
    env.update(extra_env)
    cfg = dict(model=model, batch=args.batch, min_time=args.min_time,
               gemm=args.gemm, mkldnn=mkldnn, static=static, fast_prelu=fast)
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{model}/{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilefacenet", "iresnet50"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=5.0,
                        help="seconds of timed forward passes per measurement "
                             "(at least one batch)")
    parser.add_argument("--gemm", type=int, default=2048, help="GEMM matrix side")
    args = parser.parse_args()

    import fr_lib  # noqa: F401  (MXNet import shims)
    from fr_lib.model_zoo import count_flops, get_model

    flops = {m: 2 * count_flops(get_model(m)) for m in args.models}
    load_before = os.getloadavg()
    results = {(m, s[0]): [] for m in args.models for s in SETTINGS}
    for r in range(args.rounds):
        for model in args.models:
            for setting in SETTINGS:
                res = measure(model, setting, args)
                results[(model, setting[0])].append(res)
                print(f"round {r + 1}/{args.rounds} {model:<14} {setting[0]:<22} "
                      f"{res['img_s']:8.1f} img/s  GEMM {res['gemm_flops'] / 1e9:6.1f} "
                      f"GFLOP/s", flush=True)

    load_after = os.getloadavg()
    print(f"\ncores: {os.cpu_count()}, batch: {args.batch}, rounds: {args.rounds}, "
          f"GEMM: {args.gemm}x{args.gemm} float32; medians over rounds")
    print(f"1-min load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          "(other processes on these cores slow multi-threaded settings most)")
    header = (f"{'model':<14}{'setting':<23}{'GFLOPs/img':>11}{'img/s':>9}"
              f"{'vs default':>11}{'GEMM GFLOP/s':>14}{'utilisation':>13}")
    print(header)
    print("-" * len(header))
    for model in args.models:
        base = statistics.median(r["img_s"] for r in results[(model, "default")])
        for setting in SETTINGS:
            runs = results[(model, setting[0])]
            img_s = statistics.median(r["img_s"] for r in runs)
            gemm = statistics.median(r["gemm_flops"] for r in runs)
            print(f"{model:<14}{setting[0]:<23}{flops[model] / 1e9:>11.2f}{img_s:>9.1f}"
                  f"{img_s / base:>10.2f}x{gemm / 1e9:>14.1f}"
                  f"{img_s * flops[model] / gemm:>12.1%}")


if __name__ == "__main__":
    main()
