#!/usr/bin/env bash
# Install restorekit with its test dependencies on a fresh machine and run the test suite.
# This is the README's test command; .ci/run calls it unchanged, in a fresh virtual environment.
# It installs into whatever environment `python3` is (activate a venv first to keep it there);
# extra arguments go to pytest (e.g. `bash scripts/test.sh -q -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# torch==2.13.0 is pinned here so pip takes the CPU build at hand instead of pulling a
# newer CUDA build of several GB; on a GPU machine install the torch you want first.
# --no-compile: Python compiles what the tests import on first use; precompiling every
# module of torch and the rest costs a fresh venv about a minute of CPU.
"$PY" -m pip install -q --no-compile torch==2.13.0 -e ".[test,visqol,ray,generate]"

# Headless Chromium opens the comparison report in tests/test_report_browser.py; the same
# names are searched there. Without it that test is skipped, saying why; nothing else needs it.
find_chromium() {
  local name
  for name in "${RESTOREKIT_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
    [ -n "$name" ] && command -v "$name" >/dev/null 2>&1 && return 0
  done
  return 1
}
if ! find_chromium; then
  if [ "$(id -u)" = 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"  # never a password prompt: -n fails instead of asking
  else
    sudo=none
  fi
  if [ "$sudo" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's chromium for the browser test (apt-get)" >&2
    $sudo apt-get update -qq >/dev/null || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
  fi
  if ! find_chromium; then
    echo "scripts/test.sh: chromium is needed for the browser test (tests/test_report_browser.py), which will be" \
         "skipped: install it (Debian/Ubuntu: sudo apt-get install chromium) or set RESTOREKIT_CHROMIUM to a" \
         "Chromium/Chrome binary" >&2
  fi
fi

# torch's OpenMP threads busy-wait by default, which slows every torch stage 4-100x when
# the other cores are busy (subprocess tests, a shared CI machine); passive waiting avoids it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$PY" -m pytest "$@"
