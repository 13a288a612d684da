#!/usr/bin/env bash
# The H2O client contract test: the real `h2o-mlops-scoring-client` (Python) scores through a
# running `provenant serve`, and its answers are checked against the `onnxruntime` Python
# package. Installs its Python packages into .venv-contract/ (once), builds the server binary
# if needed, starts it on a scratch data dir and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-contract
source scripts/venv.sh
venv "$VENV" "import h2o_mlops_scoring_client, onnxruntime, pandas" \
  "h2o-mlops-scoring-client==0.2.1b1" "pandas<2" "numpy<2" "onnxruntime==1.32.0"

cargo build --locked --quiet --bin provenant
BIN="${CARGO_TARGET_DIR:-target}/debug/provenant"
DATA=$(mktemp -d)
OUT="$DATA/serve.out"
SERVER=
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
source scripts/serve-demo.sh
serve_demo "$BIN" "$DATA"
BASE=$(sed -n 's|^provenant listening on \(http://[^ ]*\).*|\1|p' "$OUT")
TOKEN=$(grep '^pvn_' "$OUT")
DEPLOYMENT=$(sed -n 's|^demo scoring URL: http://[^/]*/\([^/]*\)/model/score|\1|p' "$OUT")
"$VENV/bin/python" tests/contract/h2o_client.py "$BASE" "$TOKEN" "$DEPLOYMENT"

# The data dir the client scored into, exported as an audit bundle and checked offline.
KEY=$("$VENV/bin/python" - "$BASE" "$TOKEN" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(base + "/api/v1/ledger/keys", headers={"Authorization": "Bearer " + token})
print(json.load(urllib.request.urlopen(req))["keys"][0]["public_key"])
PY
)
kill $SERVER
wait $SERVER 2>/dev/null || true
bash scripts/bundle-check.sh "$DATA/data" "$KEY"
