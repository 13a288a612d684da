#!/usr/bin/env bash
# Checks the drift statistics against scipy and numpy on generated data (see
# scripts/drift-check.py). Installs its Python packages into .venv-drift/ (once).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-drift
source scripts/venv.sh
venv "$VENV" "import numpy, scipy" "numpy==2.4.6" "scipy==1.17.1"

cargo build --locked --quiet --bin provenant
"$VENV/bin/python" scripts/drift-check.py "${CARGO_TARGET_DIR:-target}/debug/provenant"
