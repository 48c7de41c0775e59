#!/usr/bin/env bash
# Set up (once), build the book in quick mode, run every test and, beside them, the Colab
# simulation (one section per chapter + the unit tests on NumPy 2).
#   bash scripts/test.sh            # what CI runs (.ci/run)
#   bash scripts/test.sh -k device  # extra arguments go to pytest
#   FR_COLAB_SIM=0 bash scripts/test.sh   # without the Colab simulation
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
VENV=${FR_VENV:-.venv}
"$VENV/bin/python" scripts/sync_notebooks.py --check
sim=${FR_COLAB_SIM:-1}
if [[ "$sim" != 0 ]]; then
  # The Colab-like venv (Python 3.12, NumPy 2, ...) is mostly downloads: build
  # it (or find it cached) while the book builds.
  mkdir -p _build
  "$VENV/bin/python" scripts/colab_sim.py --prepare >_build/colab-sim-prepare.log 2>&1 &
  prepare=$!
  trap 'kill "$prepare" 2>/dev/null || true' EXIT
fi
FR_QUICK=1 bash scripts/book.sh
if [[ "$sim" != 0 ]]; then
  if ! wait "$prepare"; then
    cat _build/colab-sim-prepare.log >&2
    echo "[test] ERROR: could not build the Colab-like venv (log above)" >&2
    exit 1
  fi
  # The simulation runs beside the unit tests: much of it is waiting on pip
  # and kernels, and together they finish sooner than one after the other
  # (benchmarks/README.md, "Colab simulation"). The book build has just
  # trained quick_face_model: the simulation loads it instead of training it.
  quick=$("$VENV/bin/python" -c "import os; from fr_lib.data import get_data_root; print(os.path.join(get_data_root(), 'quick'))")
  "$VENV/bin/python" scripts/colab_sim.py --tests --seed-quick "$quick" \
    >_build/colab-sim.log 2>&1 &
  simulation=$!
  trap 'kill "$simulation" 2>/dev/null || true' EXIT
fi
status=0
"$VENV/bin/python" -m pytest tests "$@" || status=$?
if [[ "$sim" != 0 ]]; then
  sim_status=0
  wait "$simulation" || sim_status=$?
  cat _build/colab-sim.log
  if [[ "$sim_status" != 0 ]]; then
    echo "[test] ERROR: the Colab simulation failed (log above)" >&2
    status=1
  fi
fi
exit "$status"
