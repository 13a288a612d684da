#!/usr/bin/env bash
# The audit bundle check: a bundle exported from a data dir (the server stopped) must pass
# `provenant verify-bundle` and the independent script docs/verify_bundle.py, pinned to the
# ledger's published key; a tampered copy must fail both. Installs the script's two Python
# packages into .venv-bundle/ (once).
#   scripts/bundle-check.sh DATA_DIR PUBLIC_KEY_HEX
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1
KEY=$2

VENV=.venv-bundle
source scripts/venv.sh
venv "$VENV" "import blake3, cryptography" "blake3==1.0.11" "cryptography==50.0.2"

BIN="${CARGO_TARGET_DIR:-target}/debug/provenant"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$BIN" export-bundle --data "$DATA" --out "$OUT/all.zip"
"$BIN" verify-bundle "$OUT/all.zip" --key "$KEY"
"$VENV/bin/python" docs/verify_bundle.py "$OUT/all.zip" --key "$KEY"

# After a key rotation, a second bundle proves the log only grew since the first one's head,
# and that the new key was announced by the old.
SIZE=$("$VENV/bin/python" -c 'import json, sys, zipfile; print(json.load(zipfile.ZipFile(sys.argv[1]).open("manifest.json"))["tree_size"])' "$OUT/all.zip")
"$BIN" rotate-key --data "$DATA"
"$BIN" export-bundle --data "$DATA" --out "$OUT/later.zip" --previous-size "$SIZE"
"$BIN" verify-bundle "$OUT/later.zip" --key "$KEY"
"$VENV/bin/python" docs/verify_bundle.py "$OUT/later.zip" --key "$KEY"

# One event's text changed: both checkers must refuse the bundle.
"$VENV/bin/python" - "$OUT/all.zip" "$OUT/tampered.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
    for name in z.namelist():
        data = z.read(name)
        if name == "events.txt":
            assert b'"Healthy"' in data
            data = data.replace(b'"Healthy"', b'"Failed"', 1)
        out.writestr(name, data)
PY
if "$VENV/bin/python" docs/verify_bundle.py "$OUT/tampered.zip" --key "$KEY"; then
  echo "bundle-check: the script accepted a tampered bundle" >&2
  exit 1
fi
if "$BIN" verify-bundle "$OUT/tampered.zip" --key "$KEY"; then
  echo "bundle-check: verify-bundle accepted a tampered bundle" >&2
  exit 1
fi
echo "bundle-check: both checkers accept the bundle and refuse the tampered copy"
