#!/usr/bin/env bash
# Set up (once), build the book in quick mode and run every test.
#   bash scripts/test.sh            # what CI runs (.ci/run)
#   bash scripts/test.sh -k device  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
VENV=${FR_VENV:-.venv}
"$VENV/bin/python" scripts/sync_notebooks.py --check
FR_QUICK=1 bash scripts/book.sh
"$VENV/bin/python" -m pytest tests "$@"
