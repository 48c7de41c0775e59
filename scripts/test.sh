#!/usr/bin/env bash
# Set up (once), build the book in quick mode, run every test, then the Colab
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
"$VENV/bin/python" -m pytest tests "$@"
if [[ "$sim" != 0 ]]; then
  if ! wait "$prepare"; then
    cat _build/colab-sim-prepare.log >&2
    echo "[test] ERROR: could not build the Colab-like venv (log above)" >&2
    exit 1
  fi
  # the book build has just trained quick_face_model: the simulation loads it
  # instead of training it again (benchmarks/README.md, "Colab simulation")
  quick=$("$VENV/bin/python" -c "import os; from fr_lib.data import get_data_root; print(os.path.join(get_data_root(), 'quick'))")
  "$VENV/bin/python" scripts/colab_sim.py --tests --seed-quick "$quick"
fi
