#!/usr/bin/env bash
# The whole test suite: unit, integration (real server on loopback) and golden replay tests,
# then the contract test with the real H2O scoring client and the drift check against scipy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DYLIB_PATH="$PWD/.ort/lib/libonnxruntime.so"
cargo test --all-targets --locked
bash scripts/contract-test.sh
bash scripts/drift-check.sh
