#!/usr/bin/env bash
# Install restorekit with its test dependencies on a fresh machine and run the test suite.
# This is the README's test command; .ci/run calls it unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# torch==2.13.0 is pinned here so pip takes the CPU build at hand instead of pulling a
# newer CUDA build of several GB; on a GPU machine install the torch you want first.
"$PY" -m pip install -q torch==2.13.0 -e ".[test,visqol]"
# Headless Chromium opens the comparison report in the browser test.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
# torch's OpenMP threads busy-wait by default, which slows every torch stage 4-100x when
# the other cores are busy (subprocess tests, a shared CI machine); passive waiting avoids it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$PY" -m pytest "$@"
