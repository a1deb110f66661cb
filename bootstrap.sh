#!/usr/bin/env bash
# Installs what hoso needs on a Debian 12 machine (idempotently) and runs one job:
#   ./bootstrap.sh demo   - process the bundled sample dossier end to end with embedded defaults
#   ./bootstrap.sh test   - run the test suite
#   ./bootstrap.sh setup  - only install
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc
  tesseract-ocr tesseract-ocr-vie tesseract-ocr-script-viet
  poppler-utils qpdf ghostscript
  softhsm2 opensc
  fonts-noto-core fonts-liberation
  chromium
)
VENV=.venv

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing system packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

find_python() {
  local c
  for c in python3 python3.11 python3.12 python3.13; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  echo "bootstrap: Python >= 3.11 is required" >&2; return 1
}

install_python_packages() {
  local stamp="$VENV/.hoso-installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  [ -x "$VENV/bin/python" ] || "$(find_python)" -m venv "$VENV"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing Python packages into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
  fi
}

install_system_packages
install_python_packages

case "${1:-setup}" in
  setup) ;;
  demo) exec "$VENV/bin/hoso" demo ;;
  # One pytest worker per core, each taking whole test files (a file's fixtures are built once and its tests
  # keep their order); HOSO_TEST_WORKERS=0 runs everything in this one process.
  test) shift; exec "$VENV/bin/python" -m pytest -n "${HOSO_TEST_WORKERS:-auto}" --dist loadfile "$@" ;;
  *) echo "usage: $0 [setup|demo|test [pytest args]]" >&2; exit 2 ;;
esac
