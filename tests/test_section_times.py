"""scripts/section_times.py without executing a notebook: which sections it
runs, their budgets, the command it builds and the table it prints."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import section_times as st  # noqa: E402
import sync_notebooks  # noqa: E402


def test_every_notebook_of_the_toc_in_order():
    entries = st.sections()
    toc = [e for e in sync_notebooks.toc_files()
           if os.path.exists(os.path.join(ROOT, e + ".ipynb"))]
    assert entries == toc and len(entries) > 20
    assert all(e.startswith("book/chapter_") for e in entries)


def test_budgets_are_issue_14s():
    assert st.budget("book/chapter_loss/loss-comparison") == 120
    assert st.budget("book/chapter_loss/lgm") == 60


def test_the_command_is_pinned_and_quick(monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, cwd, env, capture_output, text):
        seen.update(cmd=cmd, cwd=cwd, env=env)
        return subprocess.CompletedProcess(cmd, 1, "", "x\nAssertionError: boom\nmore")

    monkeypatch.setattr(st.subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    row = st.run_section("book/chapter_loss/lgm", 1, str(tmp_path), 60, sys.executable)
    assert seen["cmd"][:3] == ["taskset", "-c", "0"]
    assert "--execute" in seen["cmd"] and "lgm.ipynb" in seen["cmd"]
    assert seen["cwd"].endswith(os.path.join("book", "chapter_loss"))
    assert seen["env"]["FR_QUICK"] == "1" and "OMP_NUM_THREADS" not in seen["env"]
    assert row["section"] == "loss/lgm" and not row["ok"]
    assert row["error"] == "AssertionError: boom"


def test_table_flags_what_is_over_budget():
    rows = [{"section": "loss/lgm", "seconds": 75.0, "cpu_seconds": 50.0,
             "ok": True, "load_before": (1.0, 2.0, 3.0), "budget": 60.0},
            {"section": "loss/loss-comparison", "seconds": 90.0, "cpu_seconds": 80.0,
             "ok": True, "load_before": None, "budget": 120.0}]
    lines = st.markdown(rows, 1).splitlines()
    assert lines[2].startswith("| loss/loss-comparison | 90.0 | 80.0 | ? | 120 |  |")
    assert lines[3] == "| loss/lgm | 75.0 | 50.0 | 1.00 2.00 3.00 | 60 | over by 15.0 s |"
    assert "**165.0**" in lines[-1] and "**130.0**" in lines[-1]
