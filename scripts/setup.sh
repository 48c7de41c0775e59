#!/usr/bin/env bash
# Set up everything the book and the tests need, once; later runs are quick.
#   bash scripts/setup.sh            # Python venv (.venv) + Chinese fonts
#   bash scripts/setup.sh --browser  # ... + Chromium for the HTML test
# FR_PYTHON picks the interpreter (default python3.11), FR_VENV the venv path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FR_PYTHON:-python3.11}
VENV=${FR_VENV:-.venv}
want_browser=0
[[ "${1:-}" == "--browser" ]] && want_browser=1

log() { echo "[setup] $*"; }

# --- system packages: a CJK font (figures and HTML), Chromium (HTML test) ---
apt_pkgs=()
# Noto CJK for the HTML; WenQuanYi Micro Hei for matplotlib (it reads only the
# first, Japanese, face of Noto's .ttc collection).
fc-list 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null || apt_pkgs+=(fonts-noto-cjk fontconfig)
fc-list 2>/dev/null | grep -i "WenQuanYi Micro Hei" >/dev/null || apt_pkgs+=(fonts-wqy-microhei)
# a C++ compiler for fr_lib's native CPU operators (fr_lib.ops)
command -v c++ >/dev/null || command -v g++ >/dev/null || apt_pkgs+=(g++)
if (( want_browser )); then
  command -v chromium >/dev/null || apt_pkgs+=(chromium)
  command -v chromedriver >/dev/null || apt_pkgs+=(chromium-driver)
fi
if (( ${#apt_pkgs[@]} )); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if [[ -n "$SUDO" ]] && ! command -v sudo >/dev/null; then
    log "WARNING: cannot install ${apt_pkgs[*]} (not root, no sudo); install them by hand"
  else
    log "apt-get install ${apt_pkgs[*]}"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  fi
fi

# --- Python environment ---
if ! command -v "$PY" >/dev/null; then
  echo "[setup] ERROR: $PY not found; install Python 3.11 or set FR_PYTHON" >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.setup-stamp"
digest=$(cat requirements.txt constraints.txt fr_lib/pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
  log "pip install -r requirements.txt -c constraints.txt (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e fr_lib
  echo "$digest" > "$stamp"
fi
"$VENV/bin/python" -c "import fr_lib, mxnet, numpy; print('[setup] fr_lib', \
fr_lib.__version__, '| mxnet', mxnet.__version__, '| numpy', numpy.__version__)"
# Compile fr_lib's native CPU operators once now (cached under ~/.cache), so
# that notebooks and tests running in parallel find them built.
"$VENV/bin/python" -m fr_lib.ops >/dev/null \
  || log "WARNING: fr_lib's native operators did not build; fr_lib uses its slower pure-MXNet formulas"
