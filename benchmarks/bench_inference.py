"""Inference speed of face backbones on CPU, as a share of the machine's GEMM rate.

For MobileFaceNet and IResNet-50 at batch 64, each setting below runs in its
own process (OpenMP settings are fixed when MXNet loads), and the settings
are measured alternately, round after round, so that a busy neighbour slows
all of them alike. Every process also times a float32 GEMM (``mx.nd.dot`` of
two square matrices) with the same threads, in three short bursts
alternating with the network's, and the report gives the median over the
bursts of share of GEMM = images/s x forward FLOPs per image / GEMM FLOP/s,
with forward FLOPs = 2 x the multiply-adds of
:func:`fr_lib.model_zoo.count_flops` (then the median over rounds).

Settings (threads: ``OMP_NUM_THREADS`` = cores, fr_lib's default, unless
said otherwise):

- ``baseline``: ``net.hybridize()`` -- what a plain Gluon user writes;
- ``gluon-prelu``: as ``baseline`` with ``nn.PReLU`` instead of fr_lib's
  PReLU formula (both MXNet operators: since the native backend became
  explicit, an unconverted network never traces ``fr_prelu``);
- ``mxnet-threads``: as ``baseline`` with MXNet's own default thread count
  (half the cores);
- ``static``: ``hybridize(static_alloc=True, static_shape=True)``;
- ``static+mkldnn``: also the oneDNN (MKLDNN) subgraph backend (fuses
  convolution + BN (+ ReLU, + sum));
- ``static+maxprelu``: static, PReLU as ``max(x, alpha x)``, no fusion;
- ``prepared``: :func:`fr_lib.model_zoo.prepare_for_inference` with its
  defaults: for MobileFaceNet the fused native operator
  (:mod:`fr_lib.model_zoo.fused`: the whole network in one operator, BN
  folded, one memory layout, PReLU and residual applied in registers),
  verified on the batch; for IResNet-50 the MXNet settings below;
- ``prepared-mxnet``: ``prepare_for_inference(..., engine='mxnet')``: static
  memory, oneDNN fusion verified on the batch, PReLU as ``max(x, alpha x)``
  (MXNet operators only);
- ``prepared+passive``: ``prepared-mxnet`` with ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP
  threads sleep instead of spinning; can help when other processes share
  the cores);
- ``prepared-no-native``: ``prepared`` with ``FR_LIB_NATIVE=0`` (the
  library is never loaded, so ``engine='auto'`` means the MXNet settings:
  the same as ``prepared-mxnet``, as a check of the fallback);
- ``onnxruntime``: not MXNet: the model exported with
  :func:`fr_lib.deploy.export_onnx` and run by onnxruntime
  (:class:`fr_lib.deploy.OnnxEmbedder`, same threads) -- a reference for
  what a mature CPU inference stack reaches on this machine;
- ``prepared+micro16``, ``prepared+micro8``, ``prepared+micro4``:
  ``prepared-mxnet``, with the batch of 64 fed as micro-batches of 16, 8 or 4
  images (outputs concatenated), so that the activations of the
  memory-bound element-wise layers stay in cache.

    .venv/bin/python benchmarks/bench_inference.py [--rounds 3] [--models ...]
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
from fr_lib.model_zoo import get_model, prepare_for_inference

def timed(fn, min_time):
    fn()  # warm-up: graph building, memory planning, kernel selection
    n, start = 0, time.perf_counter()
    while True:
        fn(); n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n / elapsed

mx.random.seed(0)
net = get_model(cfg['model'], fast_prelu=cfg['prelu'] != 'gluon')
net.initialize(mx.init.MSRAPrelu())
x = mx.nd.random.uniform(-1, 1, shape=(cfg['batch'], 3, 112, 112))
if cfg['mode'] == 'plain':
    net.hybridize()
elif cfg['mode'] == 'onnx':
    import os, tempfile
    from fr_lib import deploy
    path = os.path.join(tempfile.mkdtemp(), 'model.onnx')
    deploy.export_onnx(net, path)
    runner = deploy.OnnxEmbedder(path, num_threads=int(os.environ['OMP_NUM_THREADS']))
else:
    # micro-batches through the package's own option (same embeddings)
    net = prepare_for_inference(
        net, x if cfg['backend'] else None, backend=cfg['backend'],
        prelu='max' if cfg['prelu'] == 'max' else 'keep',
        micro_batch=cfg['micro'] or None, engine=cfg['engine'])
backend = getattr(net, 'inference_backend', None)
forward = lambda: net(x).wait_to_read()
if cfg['mode'] == 'onnx':
    x_np = x.asnumpy()
    forward = lambda: runner.features(x_np)
n = cfg['gemm']
a = mx.nd.random.uniform(shape=(n, n))
b = mx.nd.random.uniform(shape=(n, n))
gemm = lambda: mx.nd.dot(a, b).wait_to_read()
# Network and GEMM alternate in short bursts, so that both see the same load.
img_s, gemm_flops = [], []
for _ in range(3):
    img_s.append(timed(forward, cfg['min_time'] / 3) * cfg['batch'])
    gemm_flops.append(timed(gemm, 0.5) * 2 * n ** 3)
shares = sorted(i / g for i, g in zip(img_s, gemm_flops))
print(json.dumps({'img_s': sorted(img_s)[1], 'backend': backend,
                  'gemm_flops': sorted(gemm_flops)[1], 'share_img': shares[1]}))
"""

CORES = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count())
HALF = str(max(1, int(CORES) // 2))
# name: (environment, mode, subgraph backend, PReLU form[, micro-batch
# [, prepare_for_inference engine]])
SETTINGS = {
    "baseline": ({}, "plain", None, "fast"),
    "gluon-prelu": ({}, "plain", None, "gluon"),
    "mxnet-threads": ({"OMP_NUM_THREADS": HALF}, "plain", None, "fast"),
    "static": ({}, "static", None, "fast"),
    "static+mkldnn": ({}, "static", "MKLDNN", "fast"),
    "static+maxprelu": ({}, "static", None, "max"),
    "prepared": ({}, "static", "MKLDNN", "max", 0, "auto"),
    "prepared-mxnet": ({}, "static", "MKLDNN", "max"),
    "prepared+passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, "static", "MKLDNN", "max"),
    "prepared-no-native": ({"FR_LIB_NATIVE": "0"}, "static", "MKLDNN", "max", 0, "auto"),
    "prepared+micro16": ({}, "static", "MKLDNN", "max", 16),
    "prepared+micro8": ({}, "static", "MKLDNN", "max", 8),
    "prepared+micro4": ({}, "static", "MKLDNN", "max", 4),
    "onnxruntime": ({}, "onnx", None, "fast"),
}
GOALS = {"mobilefacenet": 0.45, "iresnet50": 0.70,  # issue 5, share of GEMM
         "mobilefacenet_512": 0.80}                 # issue 17 (InsightFace mbf)
_CONTROLLED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MXNET_SUBGRAPH_BACKEND",
               "FR_LIB_NATIVE")


def measure(model, name, args):
    extra_env, mode, backend, prelu, *rest = SETTINGS[name]
    micro, engine = (list(rest) + [0, "mxnet"][len(rest):])[:2]
    env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED}
    env["OMP_NUM_THREADS"] = CORES
    env.update(extra_env)
    cfg = dict(model=model, batch=args.batch, min_time=args.min_time,
               gemm=args.gemm, mode=mode, backend=backend, prelu=prelu,
               micro=micro, engine=engine)
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{model}/{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["mobilefacenet", "mobilefacenet_512", "iresnet50"])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                        default=[s for s in SETTINGS
                                 if s not in ("prepared+micro16", "prepared+micro8")],
                        help="default: all but micro-batches of 16 and 8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=5.0,
                        help="seconds of timed forward passes per measurement "
                             "(at least one batch)")
    parser.add_argument("--gemm", type=int, default=2048, help="GEMM matrix side")
    args = parser.parse_args()
    settings = ["baseline"] + [s for s in args.settings if s != "baseline"]

    import fr_lib  # noqa: F401  (MXNet import shims)
    from fr_lib.model_zoo import count_flops, get_model

    flops = {m: 2 * count_flops(get_model(m)) for m in args.models}
    load_before = os.getloadavg()
    results = {(m, s): [] for m in args.models for s in settings}
    for r in range(args.rounds):
        for model in args.models:
            for name in settings:
                res = measure(model, name, args)
                results[(model, name)].append(res)
                share = res["share_img"] * flops[model]
                print(f"round {r + 1}/{args.rounds} {model:<14} {name:<18} "
                      f"{res['img_s']:8.1f} img/s  GEMM "
                      f"{res['gemm_flops'] / 1e9:6.1f} GFLOP/s  {share:6.1%}",
                      flush=True)

    load_after = os.getloadavg()
    print(f"\ncores: {CORES}, batch: {args.batch}, rounds: {args.rounds}, "
          f"GEMM: {args.gemm}x{args.gemm} float32; medians over rounds")
    print(f"1-min load average before/after: {load_before[0]:.2f} / "
          f"{load_after[0]:.2f} (other processes on these cores make every "
          "figure noisy; compare shares within a run)")
    header = (f"{'model':<14}{'setting':<19}{'GFLOPs/img':>11}{'img/s':>9}"
              f"{'vs base':>9}{'GEMM GFLOP/s':>14}{'share of GEMM':>15}")
    print(header)
    print("-" * len(header))
    summary = []
    for model in args.models:
        base = statistics.median(r["img_s"] for r in results[(model, "baseline")])
        shares = {}
        for name in settings:
            runs = results[(model, name)]
            img_s = statistics.median(r["img_s"] for r in runs)
            gemm = statistics.median(r["gemm_flops"] for r in runs)
            shares[name] = statistics.median(r["share_img"] * flops[model]
                                             for r in runs)
            backends = {r["backend"] for r in runs} - {None}
            note = f"  [{'/'.join(sorted(backends))}]" if backends else ""
            print(f"{model:<14}{name:<19}{flops[model] / 1e9:>11.2f}{img_s:>9.1f}"
                  f"{img_s / base:>8.2f}x{gemm / 1e9:>14.1f}"
                  f"{shares[name]:>14.1%}{note}")
        mxnet_shares = {k: v for k, v in shares.items() if k != "onnxruntime"}
        best = max(mxnet_shares, key=mxnet_shares.get)
        goal = GOALS.get(model)
        line = (f"{model}: baseline {shares['baseline']:.1%} of GEMM, best MXNet "
                f"setting '{best}' {shares[best]:.1%} "
                f"({shares[best] / shares['baseline']:.2f}x)")
        if goal:
            line += f"; goal >= {goal:.0%}: {'met' if shares[best] >= goal else 'missed'}"
        if "onnxruntime" in shares:
            line += f"; onnxruntime (reference) {shares['onnxruntime']:.1%}"
        summary.append(line)
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
