#!/usr/bin/env bash
# Checks the drift statistics against scipy and numpy on generated data (see
# scripts/drift-check.py). Installs its Python packages into .venv-drift/ (once).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-drift
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import numpy, scipy" 2>/dev/null; then
  echo "drift-check: installing numpy and scipy into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "numpy==2.4.6" "scipy==1.17.1"
fi

cargo build --locked --quiet --bin provenant
"$VENV/bin/python" scripts/drift-check.py "${CARGO_TARGET_DIR:-target}/debug/provenant"
