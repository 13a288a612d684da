# Sourced by the scripts that need a running server: `serve_demo BIN DIR` starts `BIN serve`
# on a fresh data dir under DIR, on a free loopback port, sets SERVER to its pid, and returns
# once the demo deployment answers (its output in DIR/serve.out, errors in DIR/serve.err).
serve_demo() {
  local bin=$1 dir=$2
  "$bin" serve --data "$dir/data" --addr 127.0.0.1:0 > "$dir/serve.out" 2> "$dir/serve.err" &
  SERVER=$!
  for _ in $(seq 1 150); do
    grep -q "demo scoring URL" "$dir/serve.out" 2>/dev/null && return 0
    sleep 0.2
  done
  kill "$SERVER" 2>/dev/null || true
  cat "$dir/serve.err" >&2
  echo "$(basename "$0" .sh): the server did not start" >&2
  return 1
}
