#!/usr/bin/env bash
# The whole test suite: unit, integration (real server on loopback) and golden replay tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DYLIB_PATH="$PWD/.ort/lib/libonnxruntime.so"
cargo test --all-targets --locked
