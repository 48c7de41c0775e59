"""Missed kernel replies in nbclient: its default client vs scripts/stepped_kernel.

Builds a notebook whose cells print into an ipywidgets ``Output`` (what the
book's ``interactive_output`` explorers do; nbclient answers every such print
with a message to the kernel on the shell socket), then executes it ``--runs``
times with nbclient's default kernel client and with
``stepped_kernel.SteppedKernelManager``, alternating. Every cell takes a few
milliseconds, so a cell that takes about the cell timeout (default client) or
about one step (stepped client) is one whose reply was there but not seen.

    .venv/bin/python benchmarks/nb_hang.py --runs 10

Prints, per client: runs, cells, cells that waited (≥ 0.9 × the step for the
stepped client, ≥ 0.9 × the timeout for the default one), total seconds.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def make_notebook(cells, prints):
    from nbformat.v4 import new_code_cell, new_notebook
    code = [new_code_cell("import ipywidgets as widgets\nfrom IPython.display import display")]
    for _ in range(cells):
        code.append(new_code_cell(
            "out = widgets.Output()\ndisplay(out)\nwith out:\n"
            f"    for j in range({prints}):\n        print(j)"))
    nb = new_notebook(cells=code)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def execute(nb, timeout, manager, folder):
    """Execute a copy of ``nb``; return (seconds per code cell, total seconds)."""
    import copy
    from nbclient import NotebookClient
    kwargs = {"kernel_manager_class": manager} if manager is not None else {}
    client = NotebookClient(copy.deepcopy(nb), timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": folder}}, **kwargs)
    started, took = {}, []
    client.on_cell_execute = lambda cell, cell_index: started.__setitem__(
        cell_index, time.perf_counter())
    client.on_cell_executed = lambda cell, cell_index, execute_reply: took.append(
        time.perf_counter() - started[cell_index])
    start = time.perf_counter()
    client.execute()
    return took, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cells", type=int, default=60)
    parser.add_argument("--prints", type=int, default=40,
                        help="lines each cell prints into its Output widget")
    parser.add_argument("--timeout", type=int, default=8, help="cell timeout, seconds")
    args = parser.parse_args(argv)
    from stepped_kernel import STEP, SteppedKernelManager
    nb = make_notebook(args.cells, args.prints)
    clients = {"nbclient default": (None, 0.9 * args.timeout),
               "stepped_kernel": (SteppedKernelManager, 0.9 * STEP)}
    totals = {name: [0, 0, 0.0] for name in clients}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            for name, (manager, limit) in clients.items():
                took, seconds = execute(nb, args.timeout, manager, folder)
                waited = sum(t >= limit for t in took)
                totals[name][0] += len(took)
                totals[name][1] += waited
                totals[name][2] += seconds
                print(f"run {run + 1:2d}  {name:17s} {seconds:6.1f} s  "
                      f"cells that waited: {waited}", flush=True)
    print(f"\nstep {STEP} s, cell timeout {args.timeout} s, {args.runs} runs of "
          f"{args.cells + 1} cells")
    print(f"{'client':17s} {'cells':>6s} {'waited':>7s} {'total s':>8s}")
    for name, (cells, waited, seconds) in totals.items():
        print(f"{name:17s} {cells:6d} {waited:7d} {seconds:8.1f}")


if __name__ == "__main__":
    main()
