#!/usr/bin/env bash
# Set up (once) and build the whole book, executing every chapter.
#   bash scripts/book.sh          # quick mode (FR_QUICK=1): minutes on a laptop CPU
#   FR_QUICK=0 bash scripts/book.sh   # the full settings (GPU recommended)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
export FR_QUICK=${FR_QUICK:-1}
VENV=${FR_VENV:-.venv}
echo "[book] building with FR_QUICK=$FR_QUICK (every notebook is executed)"
rm -rf _build/html _build/jupyter_execute
"$VENV/bin/jupyter-book" build . --all -W --keep-going
if ls _build/html/reports/*.log >/dev/null 2>&1; then
  echo "[book] ERROR: notebooks failed, see _build/html/reports/" >&2
  exit 1
fi
echo "[book] done: $(pwd)/_build/html/index.html"
