"""Sphinx extension: print how long each notebook took to execute.

At the end of every build (``build-finished``) it reads the execution data
MyST-NB records per document (``NbMetadataCollector.get_exec_data``: the
runtime in seconds and whether the notebook failed), prints a table sorted
by time, slowest first, and writes the same figures to
``_build/exec-times.json`` for scripts and the CI log. The table is what this
build measured on this machine; the book's ``uptime`` load is printed with it
because a loaded machine doubles or triples every figure.
"""
import json
import os
from pathlib import Path


# Quick-mode budget per section on one core of an idle machine (issue 14);
# printed as a note, never a failure: the figures depend on the machine's load.
BUDGET_S = 60.0
BUDGETS = {"loss-comparison": 120.0}


def _rows(env):
    from myst_nb.sphinx_ import NbMetadataCollector
    rows = []
    for docname, data in sorted(NbMetadataCollector.get_doc_data(env).items()):
        exec_data = data.get("exec_data")
        if not exec_data:
            continue
        runtime = exec_data.get("runtime")
        rows.append({"section": docname,
                     "seconds": None if runtime is None else round(float(runtime), 1),
                     "method": exec_data.get("method"),
                     "succeeded": bool(exec_data.get("succeeded"))})
    # scripts/execute_book.py records which sections ran beside another one
    parallel = Path(env.app.outdir).parent / "exec-parallel.json"
    modes = {}
    if parallel.exists():
        modes = {k: v.get("mode") for k, v in
                 json.loads(parallel.read_text(encoding="utf-8"))["sections"].items()}
    for r in rows:
        r["mode"] = modes.get(r["section"], "alone, by the build")
    rows.sort(key=lambda r: -(r["seconds"] or 0.0))
    return rows


def _load():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not available on this platform
        return "unknown"


def report(app, exception):
    if exception is not None:
        return
    rows = _rows(app.env)
    if not rows:
        return
    total = sum(r["seconds"] or 0.0 for r in rows)
    load = _load()
    lines = [f"[book] execution time per section (this build, load average {load}):"]
    width = max(len(r["section"]) for r in rows)
    for r in rows:
        secs = "   n/a" if r["seconds"] is None else f"{r['seconds']:6.1f}"
        flag = "" if r["succeeded"] else "  FAILED"
        budget = BUDGETS.get(r["section"].rsplit("/", 1)[-1], BUDGET_S)
        if r["seconds"] is not None and r["seconds"] > budget:
            flag += f"  (over the {budget:.0f} s budget for an idle core)"
        lines.append(f"  {r['section']:<{width}}  {secs} s  {r['mode']:<19}{flag}")
    lines.append(f"  {'total':<{width}}  {total:6.1f} s  ({len(rows)} sections, "
                 f"FR_QUICK={os.environ.get('FR_QUICK', '1')})")
    parallel = Path(app.outdir).parent / "exec-parallel.json"
    if parallel.exists():
        info = json.loads(parallel.read_text(encoding="utf-8"))
        lines.append(f"  (scripts/execute_book.py ran them in {info['wall_seconds']:.1f} s "
                     f"wall, up to {info['jobs']} at a time on {info['cores']} cores)")
    print("\n".join(lines), flush=True)
    out = Path(app.outdir).parent / "exec-times.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"load_average": load, "total_seconds": round(total, 1),
                               "quick": os.environ.get("FR_QUICK", "1"),
                               "sections": rows}, ensure_ascii=False, indent=1))
    os.replace(tmp, out)


def setup(app):
    app.connect("build-finished", report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
