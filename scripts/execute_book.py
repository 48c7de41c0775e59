"""Execute the book's notebooks, several at a time, into the cache the build reads.

``jupyter-book build`` executes notebooks one after another. Most of the
book's sections are small-batch MXNet training whose Python overhead keeps
one core busy, so two at a time on two cores finish sooner. This script
executes every notebook of ``_toc.yml`` with ``--jobs`` worker processes and
stores each executed notebook (outputs + its execution time) in the Jupyter
cache (``_build/.jupyter_cache``); the build then runs with
``execute_notebooks: cache`` and takes the outputs from there. A notebook the
cache does not match (its code changed since) is executed by the build
itself, as before.

Two kinds of sections are not run beside another one:

* ``ALONE``: sections that time code and state a direction about the times
  (faster / slower / the slowest head): they run by themselves, after the
  parallel phase, so a neighbour cannot change their result.
* sections that use ``quick_face_model()``: they wait until the quick model
  has been trained (or loaded) once, by a job started first, instead of
  training it twice at the same time.

Each kernel gets ``OMP_NUM_THREADS = cores // jobs`` (at least 1) while
others run beside it, and all cores when alone. The per-section times the
build prints are these executions' times; sections run in pairs are marked
``(2 at a time)`` in ``_build/exec-parallel.json``.

A notebook that fails (an error, or a cell past :func:`cell_timeout`) is
executed once more, alone, after the others; only what fails twice is left to
the build.

    python scripts/execute_book.py --jobs 2     # what scripts/book.sh runs
    python scripts/execute_book.py --jobs 1     # one at a time (same cache)
"""
import argparse
import concurrent.futures as futures
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from sync_notebooks import toc_files  # noqa: E402

CACHE = os.path.join(ROOT, "_build", ".jupyter_cache")


def cell_timeout():
    """Seconds one cell may run: ``FR_CELL_TIMEOUT``, else 300 in quick mode
    and 1800 in full mode. Quick-mode cells take under a minute here (the
    slowest sections take 40-60 s in all); 300 s leaves room for a machine
    several times slower. A timed-out notebook is executed once more, alone
    (see main).

    Until 2026-12-07 a cell that writes into an ipywidgets Output widget
    could wait the whole timeout although the kernel had finished it
    (nbclient missed the reply: see ``scripts/stepped_kernel.py``); stops 20
    and 21's CI each ran about one 1800 s timeout longer than the same commit
    here. Notebooks are now executed with ``SteppedKernelManager``, for which
    such a miss costs at most half a second."""
    value = os.environ.get("FR_CELL_TIMEOUT")
    if value:
        return int(value)
    return 300 if os.environ.get("FR_QUICK", "1") != "0" else 1800
# Sections whose text states a direction about timings measured in the page.
ALONE = {
    "book/chapter_backbone/comparison",
    "book/chapter_data/dali",
    "book/chapter_deployment/export-onnx",
    "book/chapter_evaluation/benchmarks",
    "book/chapter_evaluation/roc-far",
    "book/chapter_evaluation/verification-protocol",
    "book/chapter_loss/loss-comparison",
    "book/chapter_training/data-parallel",
    "book/chapter_training/kvstore",
    "book/chapter_training/partial-fc",
    "book/chapter_training/reliable-training",
}
QUICK_MARK = "quick_face_model"


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _execute(path, threads):
    """Run one notebook in its folder; return (executed notebook JSON, s, error)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution
    from stepped_kernel import SteppedKernelManager
    os.environ["OMP_NUM_THREADS"] = str(threads)
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=os.path.dirname(path), timeout=cell_timeout(),
                                 allow_errors=False, meta_override=True,
                                 kernel_manager_class=SteppedKernelManager)
    return nbformat.writes(result.nb), result.time, result.exc_string


def _warm_quick_model(threads):
    """Train (or load) the quick model once, in a child process."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("FR_QUICK", "1")
    start = time.perf_counter()
    import fr_lib  # noqa: F401  (threads, NumPy compatibility)
    from fr_lib.train.quick import quick_face_model
    model = quick_face_model(progress=False)
    return time.perf_counter() - start, bool(model.trained)


def _needs_quick(path):
    with open(path, encoding="utf-8") as f:
        return QUICK_MARK in f.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=min(2, _cores()),
                        help="notebooks executed at the same time (default: "
                             "min(2, usable cores))")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cores = _cores()
    shared = max(1, cores // args.jobs)
    docs = [d for d in toc_files() if os.path.exists(os.path.join(ROOT, d + ".ipynb"))]
    cache = get_cache(CACHE)
    todo = []
    for doc in docs:
        path = os.path.join(ROOT, doc + ".ipynb")
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
            print(f"[execute] {doc}: cached", flush=True)
        except KeyError:
            todo.append(doc)
    parallel = [d for d in todo if d not in ALONE]
    alone = [d for d in todo if d in ALONE]
    print(f"[execute] {len(todo)} notebook(s): {len(parallel)} at most {args.jobs} "
          f"at a time ({shared} OpenMP thread(s) each), then {len(alone)} alone "
          f"({cores} thread(s)); FR_QUICK={os.environ.get('FR_QUICK', '1')}", flush=True)
    failed, times, started = [], {}, time.perf_counter()

    def store(doc, future, mode):
        try:
            text, seconds, error = future.result()
        except Exception as err:  # noqa: BLE001 - a dead kernel, a killed worker
            text, seconds, error = None, 0.0, f"{type(err).__name__}: {err}"
        if error:
            failed.append(doc)
            print(f"[execute] FAILED {doc} after {seconds:.1f} s:\n{error}", flush=True)
            return
        path = os.path.join(ROOT, doc + ".ipynb")
        record = cache.add_nb_to_project(path)
        cache.cache_notebook_bundle(
            CacheBundleIn(nbformat.reads(text, as_version=4), record.uri,
                          data={"execution_seconds": seconds}),
            check_validity=False, overwrite=True)
        times[doc] = {"seconds": round(seconds, 1), "mode": mode}
        print(f"[execute] {seconds:6.1f} s  {doc}  ({mode})", flush=True)

    if parallel:
        with futures.ProcessPoolExecutor(args.jobs) as pool:
            pending = {}
            waiting = [d for d in parallel if _needs_quick(os.path.join(ROOT, d + ".ipynb"))]
            warm = pool.submit(_warm_quick_model, shared) if waiting else None
            for doc in parallel:
                if doc not in waiting:
                    pending[pool.submit(_execute, os.path.join(ROOT, doc + ".ipynb"),
                                        shared)] = doc
            while pending or warm is not None:
                done, _ = futures.wait(list(pending) + ([warm] if warm else []),
                                       return_when=futures.FIRST_COMPLETED)
                for future in done:
                    if future is warm:
                        warm = None
                        seconds, trained = future.result()
                        print(f"[execute] {seconds:6.1f} s  quick_face_model() "
                              f"({'trained' if trained else 'loaded'}) for "
                              f"{len(waiting)} section(s)", flush=True)
                        for doc in waiting:
                            pending[pool.submit(_execute,
                                                os.path.join(ROOT, doc + ".ipynb"),
                                                shared)] = doc
                    else:
                        store(pending.pop(future), future,
                              f"{args.jobs} at a time" if args.jobs > 1 else "alone")
    def run_alone(doc, mode):
        with futures.ProcessPoolExecutor(1) as pool:
            future = pool.submit(_execute, os.path.join(ROOT, doc + ".ipynb"), cores)
            futures.wait([future])
            store(doc, future, mode)

    for doc in alone:
        run_alone(doc, "alone")
    # a failure (an error, or a cell that hung until the timeout) gets one
    # more try, alone; what still fails is left to the build, which decides
    retry, failed[:] = list(failed), []
    for doc in retry:
        print(f"[execute] {doc}: executing it again, alone", flush=True)
        run_alone(doc, "alone, second try")
    wall = time.perf_counter() - started
    out = os.path.join(ROOT, "_build", "exec-parallel.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"jobs": args.jobs, "cores": cores, "wall_seconds": round(wall, 1),
                   "sections": times, "retried": retry, "failed": failed}, f,
                  ensure_ascii=False, indent=1)
    os.replace(out + ".tmp", out)
    total = sum(t["seconds"] for t in times.values())
    print(f"[execute] {len(times)} executed in {wall:.1f} s wall ({total:.1f} s of "
          f"section time); {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
