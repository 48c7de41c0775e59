#!/usr/bin/env bash
# Set up (once) and build the whole book, executing every chapter.
#   bash scripts/book.sh          # quick mode (FR_QUICK=1): minutes on a laptop CPU
#   FR_QUICK=0 bash scripts/book.sh   # the full settings (GPU recommended)
#   FR_BOOK_JOBS=1 bash scripts/book.sh   # execute one notebook at a time
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
export FR_QUICK=${FR_QUICK:-1}
VENV=${FR_VENV:-.venv}
echo "[book] building with FR_QUICK=$FR_QUICK (every notebook is executed)"
rm -rf _build/html _build/jupyter_execute _build/.jupyter_cache _build/exec-parallel.json
# Execute every notebook first, FR_BOOK_JOBS at a time (default: 2 on two or more
# cores), into the cache the build reads (scripts/execute_book.py). A notebook
# that fails there is executed again, alone, by the build, which decides.
jobs=${FR_BOOK_JOBS:-}
if [[ "$jobs" != 1 ]]; then
  "$VENV/bin/python" scripts/execute_book.py ${jobs:+--jobs "$jobs"} ||
    echo "[book] notebooks failed above; the build executes them again, one at a time"
fi
"$VENV/bin/jupyter-book" build . --all -W --keep-going
if ls _build/html/reports/*.log >/dev/null 2>&1; then
  echo "[book] ERROR: notebooks failed, see _build/html/reports/" >&2
  exit 1
fi
echo "[book] done: $(pwd)/_build/html/index.html"
