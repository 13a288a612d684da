#!/usr/bin/env bash
# MLflow's own `mlflow models serve` beside `provenant serve`, on the same fixture classifier,
# driven by the same load generator (`provenant bench http`). Not part of CI: it installs
# MLflow into .venv-mlflow/ (once) and takes a few minutes.
#
#   bash bench/mlflow-serve.sh [SECONDS]
#
# Provenant runs as served: the demo deployment with the runtime's defaults, every
# prediction recorded in the ledger. MLflow serves the ONNX file of
# fixtures/models/wine_mlflow.zip (byte for byte the demo's model) with one uvicorn worker
# (its default) and with two (one per core). The zip's column signature cannot be served by
# MLflow's onnx flavor (it feeds each column as a rank-1 array to inputs of shape [N, 1]),
# so the script saves the same file again with a tensor signature and posts the `inputs`
# form. Both servers answer the same 1000 rows first, and their probabilities must agree
# to 1e-6, so both measure the same work.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}

VENV=.venv-mlflow
source scripts/venv.sh
venv "$VENV" "import mlflow.pyfunc, onnx, onnxruntime, uvicorn" \
  "mlflow==3.17.2" "onnx==1.23.2" "onnxruntime==1.32.0"
# mlflow starts `uvicorn` by name.
export PATH="$PWD/$VENV/bin:$PATH"
bash scripts/setup.sh
export ORT_DYLIB_PATH="$PWD/.ort/lib/libonnxruntime.so"
cargo build --release --locked --quiet --bin provenant
BIN="${CARGO_TARGET_DIR:-target}/release/provenant"

# On the working directory's file system, as `provenant bench` does: a tmpfs would fake fsync.
WORK=$(mktemp -d -p "$PWD" .mlflow-bench-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
fx = json.load(open("fixtures/models/wine_classifier.expected.json"))
fields, rows = fx["fields"], fx["rows"]
thousand = [rows[i % len(rows)] for i in range(1000)]
def mlflow(rs):
    return {"inputs": {f: [[float(r[i])] for r in rs] for i, f in enumerate(fields)}}
def provenant(rs):
    return {"fields": fields, "rows": rs}
for name, body in [("mlflow-1", mlflow(rows[:1])), ("mlflow-1000", mlflow(thousand)),
                   ("provenant-1", provenant(rows[:1])), ("provenant-1000", provenant(thousand))]:
    json.dump(body, open(f"{work}/{name}.json", "w"))
PY

source scripts/serve-demo.sh
serve_demo "$BIN" "$WORK" || exit 1
PIDS+=("$SERVER")
PROVENANT_URL=$(sed -n 's|^demo scoring URL: \(http://[^ ]*\)$|\1|p' "$WORK/serve.out")

"$VENV/bin/python" - "$WORK" <<'PY'
import io, sys, zipfile
import numpy as np, onnx, mlflow.onnx
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
work = sys.argv[1]
graph = onnx.load(io.BytesIO(zipfile.ZipFile("fixtures/models/wine_mlflow.zip").read("wine_mlflow/model.onnx")))
inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 1), i.name) for i in graph.graph.input])
outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 3), "probabilities")])
mlflow.onnx.save_model(graph, f"{work}/model", signature=ModelSignature(inputs, outputs))
PY

# Starts `mlflow models serve` with $1 workers on a free port; sets MLFLOW_URL and MLFLOW_PID.
start_mlflow() {
  local port
  port=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  "$VENV/bin/mlflow" models serve -m "$WORK/model" --env-manager local \
    --host 127.0.0.1 --port "$port" --workers "$1" > "$WORK/mlflow-$1.log" 2>&1 &
  MLFLOW_PID=$!
  PIDS+=("$MLFLOW_PID")
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/ping" > /dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/ping" > /dev/null || { cat "$WORK/mlflow-$1.log" >&2; echo "mlflow-serve: mlflow did not start" >&2; exit 1; }
  MLFLOW_URL="http://127.0.0.1:$port/invocations"
  warm "$MLFLOW_URL" mlflow-1
}

# Two seconds of load, not counted: every worker up and its model loaded before measuring.
warm() { # URL BODY
  "$BIN" bench http --url "$1" --body "$WORK/$2.json" --concurrency 16 --seconds 2 --json > /dev/null
}

# Both servers must answer the same probabilities for the same 1000 rows.
start_mlflow 1
"$VENV/bin/python" - "$WORK" "$PROVENANT_URL" "$MLFLOW_URL" <<'PY'
import json, sys, urllib.request
work, provenant_url, mlflow_url = sys.argv[1:]
def post(url, name):
    req = urllib.request.Request(url, data=open(f"{work}/{name}.json", "rb").read(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
ours = post(provenant_url, "provenant-1000")
theirs = post(mlflow_url, "mlflow-1000")["predictions"]["probabilities"]
diff = max(abs(float(a) - b) for row, pred in zip(ours["score"], theirs) for a, b in zip(row, pred))
assert len(ours["score"]) == len(theirs) == 1000, "row counts differ"
print(f"both servers agree on 1000 rows: max abs diff {diff:.3g}")
assert diff <= 1e-6, "the two servers disagree"
PY

measure() { # NAME URL BODY ROWS CONCURRENCY
  "$BIN" bench http --url "$2" --body "$WORK/$3.json" --rows "$4" --concurrency "$5" \
    --seconds "$SECONDS_PER_RUN" --json > "$WORK/$1.json"
}
measure mlflow1-1row "$MLFLOW_URL" mlflow-1 1 1,16,64
measure mlflow1-1000row "$MLFLOW_URL" mlflow-1000 1000 4
kill "$MLFLOW_PID"; wait "$MLFLOW_PID" 2>/dev/null || true
start_mlflow 2
measure mlflow2-1row "$MLFLOW_URL" mlflow-1 1 1,16,64
measure mlflow2-1000row "$MLFLOW_URL" mlflow-1000 1000 4
kill "$MLFLOW_PID"; wait "$MLFLOW_PID" 2>/dev/null || true
warm "$PROVENANT_URL" provenant-1
measure provenant-1row "$PROVENANT_URL" provenant-1 1 1,16,64
measure provenant-1000row "$PROVENANT_URL" provenant-1000 1000 4

"$VENV/bin/python" - "$WORK" "$SECONDS_PER_RUN" <<'PY'
import json, sys
work, seconds = sys.argv[1], sys.argv[2]
f = lambda name: json.load(open(f"{work}/{name}.json"))
print(f"mlflow models serve (MLflow 3.17.2) vs provenant serve (recorded), {seconds} s per run")
print(f"{'load':<28}{'mlflow, 1 worker':>18}{'mlflow, 2 workers':>19}{'provenant':>12}{'provenant / best mlflow':>25}")
rows = [(f"1-row, concurrency {c}", f"c{c}_requests_per_s", "1row", "req/s") for c in (1, 16, 64)]
rows.append(("1000-row, concurrency 4", "c4_rows_per_s", "1000row", "rows/s"))
for label, key, kind, unit in rows:
    m1, m2, p = f(f"mlflow1-{kind}")[key], f(f"mlflow2-{kind}")[key], f(f"provenant-{kind}")[key]
    print(f"{label:<28}{m1:>12.0f} {unit:<6}{m2:>12.0f} {unit:<6}{p:>12.0f}{p / max(m1, m2):>24.1f}x")
for c in (1, 16, 64):
    k = f"c{c}_p99_ms"
    print(f"p99 at concurrency {c}: mlflow {f('mlflow1-1row')[k]:.1f} / {f('mlflow2-1row')[k]:.1f} ms, provenant {f('provenant-1row')[k]:.1f} ms")
PY
