"""Time every book section executed alone, pinned to a number of cores.

    python scripts/section_times.py --cores 1            # every section, core 0
    python scripts/section_times.py --cores 1 lgm roc-far # some sections
    python scripts/section_times.py --cores 2 --json times.json

Each notebook listed in ``_toc.yml`` is executed on its own with
``FR_QUICK=1 taskset -c 0..N-1 jupyter nbconvert --execute``, run through
``scripts/stepped_kernel.py`` (whose kernel client reads a reply it missed
within half a second). The kernel inherits the CPU affinity, and fr_lib sizes
its OpenMP pool from it, as on a machine with N cores. The executed copy goes
to a temporary folder, never into ``book/``. For each section the wall time,
the exit status and the load average read just before it started are printed,
then a Markdown table, slowest first,
with each section's budget (issue 14: 60 s on one idle core, loss-comparison
120 s). The load average matters: on a shared machine another process competes
for the pinned core and the wall time grows with it. The CPU time (user + system
of nbconvert and its kernel) hardly does, so it estimates the wall time on an
idle core from below (an idle core adds only the waits for disk and sleeps).

``book/_ext/exec_times.py`` prints the times of a whole book build; this script
measures sections one by one, which is what the one-core budget is stated for.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "book", "_ext"))

from exec_times import BUDGET_S, BUDGETS  # noqa: E402  (one place for the budgets)
import sync_notebooks  # noqa: E402


def sections(root=ROOT):
    """The notebooks of ``_toc.yml`` in book order, as paths without suffix."""
    return [entry for entry in sync_notebooks.toc_files(root)
            if os.path.exists(os.path.join(root, entry + ".ipynb"))]


def budget(entry):
    return BUDGETS.get(entry.rsplit("/", 1)[-1], BUDGET_S)


def load_average():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def run_section(entry, cores, outdir, timeout, python_bin):
    """Execute one section; returns a result row (wall time in seconds)."""
    folder, name = os.path.split(os.path.join(ROOT, entry + ".ipynb"))
    env = dict(os.environ, FR_QUICK="1")
    env.pop("OMP_NUM_THREADS", None)  # fr_lib sizes it from the affinity
    # jupyter nbconvert with scripts/stepped_kernel.py's kernel client
    cmd = [python_bin, os.path.join(ROOT, "scripts", "stepped_kernel.py"),
           "--to", "notebook", "--execute", name,
           "--output-dir", outdir, "--output", entry.replace("/", "__"),
           f"--ExecutePreprocessor.timeout={int(timeout)}"]
    if cores:
        cmd = ["taskset", "-c", f"0-{cores - 1}" if cores > 1 else "0"] + cmd
    before = load_average()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of nbconvert and its kernel (reaped children count here): on a
    # core shared with other work the wall time grows, the CPU time hardly
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    row = {"section": entry.replace("book/chapter_", ""), "seconds": round(seconds, 1),
           "cpu_seconds": round(cpu, 1),
           "ok": proc.returncode == 0, "load_before": before,
           "budget": budget(entry)}
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        errors = [line for line in lines if "Error" in line or "Timeout" in line]
        row["error"] = (errors or lines or ["?"])[-1].strip()
    return row


def markdown(rows, cores):
    lines = ["| section | wall s | CPU s | load before (1/5/15 min) | budget s | |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["seconds"]):
        load = " ".join(f"{x:.2f}" for x in r["load_before"]) if r["load_before"] else "?"
        note = "" if r["ok"] else "FAILED"
        if r["ok"] and r["seconds"] > r["budget"]:
            note = f"over by {r['seconds'] - r['budget']:.1f} s"
        lines.append(f"| {r['section']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{load} | {r['budget']:.0f} | {note} |")
    total = sum(r["seconds"] for r in rows)
    cpu = sum(r["cpu_seconds"] for r in rows)
    lines.append(f"| **all {len(rows)} sections** | **{total:.1f}** | **{cpu:.1f}** "
                 "| | | |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*",
                        help="sections to run (a name such as lgm, or a path "
                             "fragment such as chapter_loss/); default: all")
    parser.add_argument("--cores", type=int, default=1,
                        help="pin to cores 0..N-1 with taskset (0: no pinning)")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="per-cell timeout of nbconvert in seconds")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.cores < 0:
        parser.error(f"--cores must be >= 0, got {args.cores}")
    if args.cores and not shutil.which("taskset"):
        parser.error("--cores needs taskset (util-linux)")
    if args.cores and args.cores > len(os.sched_getaffinity(0)):
        parser.error(f"--cores {args.cores}: this process may use only "
                     f"{len(os.sched_getaffinity(0))} cores")
    todo = sections()
    if args.names:
        todo = [e for e in todo if any(n == e.rsplit("/", 1)[-1] or n in e
                                       for n in args.names)]
        if not todo:
            parser.error(f"no section of _toc.yml matches {args.names}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fr_section_times_") as outdir:
        for entry in todo:
            row = run_section(entry, args.cores, outdir, args.timeout, sys.executable)
            rows.append(row)
            flag = "" if row["ok"] else f"  FAILED {row['error']}"
            print(f"{row['section']:<40} {row['seconds']:7.1f} s wall "
                  f"{row['cpu_seconds']:7.1f} s CPU  load before {row['load_before']}{flag}", flush=True)
    print(f"\nFR_QUICK=1, pinned to {args.cores or 'all'} core(s), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(markdown(rows, args.cores))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"cores": args.cores, "quick": True, "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
