#!/usr/bin/env bash
# Set up everything the book and the tests need, once; later runs are quick.
#   bash scripts/setup.sh            # Python venv (.venv) + Chinese fonts
#   bash scripts/setup.sh --browser  # ... + Chromium for the HTML test
# FR_PYTHON picks the interpreter (default python3.11; 3.10 and 3.12 work too),
# FR_VENV the venv path. Linux x86_64 only (MXNet 1.9.1 has no other wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${FR_PYTHON:-python3.11}
VENV=${FR_VENV:-.venv}
want_browser=0
[[ "${1:-}" == "--browser" ]] && want_browser=1

log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# --- Python first: nothing is installed for an interpreter we cannot use ---
command -v "$PY" >/dev/null || die "$PY not found. Install Python 3.11 (or 3.10/3.12) \
and/or point FR_PYTHON at it, e.g. FR_PYTHON=python3.12 bash scripts/setup.sh"
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in
  3.10) constraints=constraints-py310.txt ;;
  3.11) constraints=constraints.txt ;;
  3.12) constraints=constraints-py312.txt ;;
  *) die "$PY is Python $pyver; the book's pinned environment exists for 3.10, 3.11 \
(CI) and 3.12. fr_lib alone also runs on 3.13: see README (library-only install)." ;;
esac
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) die "MXNet 1.9.1 has wheels for Linux x86_64 only (this is $(uname -s) $(uname -m)). \
Use WSL2 (Windows) or Docker/a Linux VM (macOS, also Apple Silicon), or Colab." ;;
esac
"$PY" -m venv --help >/dev/null 2>&1 || die "$PY has no venv module \
(Debian/Ubuntu: apt-get install python$pyver-venv)"

# --- system packages: a CJK font (figures and HTML), Chromium (HTML test) ---
apt_pkgs=()
# Noto CJK for the HTML; WenQuanYi Micro Hei for matplotlib (it reads only the
# first, Japanese, face of Noto's .ttc collection).
fc-list 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null || apt_pkgs+=(fonts-noto-cjk fontconfig)
fc-list 2>/dev/null | grep -i "WenQuanYi Micro Hei" >/dev/null || apt_pkgs+=(fonts-wqy-microhei)
# a C++ compiler for fr_lib's native CPU operators (fr_lib.ops)
command -v c++ >/dev/null || command -v g++ >/dev/null || apt_pkgs+=(g++)
# clang++ with its OpenMP headers: tests/test_native_build.py compiles them with
# clang too (skipped without)
command -v clang++ >/dev/null || apt_pkgs+=(clang libomp-dev)
if (( want_browser )); then
  command -v chromium >/dev/null || apt_pkgs+=(chromium)
  command -v chromedriver >/dev/null || apt_pkgs+=(chromium-driver)
fi
if (( ${#apt_pkgs[@]} )); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if ! command -v apt-get >/dev/null || { [[ -n "$SUDO" ]] && ! command -v sudo >/dev/null; }; then
    why="no apt-get"; command -v apt-get >/dev/null && why="not root and no sudo"
    log "WARNING: cannot install system packages ($why). Missing: ${apt_pkgs[*]}"
    log "  fonts-noto-cjk, fonts-wqy-microhei: Chinese text in figures and the HTML book"
    log "  g++: fr_lib's fast CPU operators (without it fr_lib uses slower formulas)"
    log "  clang, libomp-dev: only for the clang build test (tests/test_native_build.py)"
    log "  chromium, chromium-driver: only for the HTML test (tests/test_book_html.py)"
    log "  Install them with your package manager (or ask an admin), then rerun. Continuing."
  else
    log "apt-get install ${apt_pkgs[*]}"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  fi
fi

# --- Python environment ---
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
venv_ver=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ "$venv_ver" == "$pyver" ]] || die "$VENV has Python $venv_ver, not $pyver; \
remove it or set FR_VENV to another path"
stamp="$VENV/.setup-stamp"
digest=$(cat requirements.txt requirements-nodeps.txt "$constraints" fr_lib/pyproject.toml \
  | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
  log "pip install -r requirements.txt -c $constraints (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt -c "$constraints"
  if [[ "$pyver" != 3.10 && "$pyver" != 3.11 ]]; then
    # mxnet's and d2l's metadata pin numpy<2 / releases without 3.12 wheels
    "$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
  fi
  "$VENV/bin/python" -m pip install -q -c "$constraints" -e fr_lib
  echo "$digest" > "$stamp"
fi
"$VENV/bin/python" -c "import fr_lib, mxnet, numpy; print('[setup] fr_lib', \
fr_lib.__version__, '| mxnet', mxnet.__version__, '| numpy', numpy.__version__)"
# Compile fr_lib's native CPU operators once now (cached under ~/.cache), so
# that notebooks and tests running in parallel find them built.
"$VENV/bin/python" -m fr_lib.ops >/dev/null \
  || log "WARNING: fr_lib's native operators did not build; fr_lib uses its slower pure-MXNet formulas"
