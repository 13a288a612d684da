#!/usr/bin/env bash
# Starts the server on the embedded default data dir (./provenant-data, created on first start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DYLIB_PATH="$PWD/.ort/lib/libonnxruntime.so"
exec cargo run --locked --bin provenant -- serve "$@"
