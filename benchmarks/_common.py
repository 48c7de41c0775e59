"""Helpers shared by the benchmarks (each measurement runs in its own process)."""
import json
import os
import subprocess
import sys


def run(worker, payload):
    """Run ``worker`` (Python source) with ``payload`` as JSON argv; return its last JSON line."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    out = subprocess.run([sys.executable, "-c", worker, json.dumps(payload)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmark worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
