#!/usr/bin/env bash
# Installs what Provenant needs beyond the Rust toolchain, inside the repo. Idempotent:
# does nothing when everything is already here.
#  - ONNX Runtime's shared library, from the `onnxruntime` wheel on PyPI, into .ort/lib/
#    (ort's own build-time download cannot reach its server on these machines).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.32.0
ORT_DIR=.ort
LIB="$ORT_DIR/lib/libonnxruntime.so"

if [ ! -e "$LIB" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION from PyPI into $ORT_DIR/lib" >&2
  rm -rf "$ORT_DIR/wheel" && mkdir -p "$ORT_DIR/wheel" "$ORT_DIR/lib"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    -d "$ORT_DIR/wheel" "onnxruntime==$ORT_VERSION"
  python3 - "$ORT_DIR" <<'PY'
import glob, os, sys, zipfile
ort_dir = sys.argv[1]
wheel = glob.glob(os.path.join(ort_dir, "wheel", "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            with open(os.path.join(ort_dir, "lib", base), "wb") as out:
                out.write(z.read(name))
PY
  full=$(ls "$ORT_DIR"/lib/libonnxruntime.so.* | grep -v providers | head -n 1)
  ln -sf "$(basename "$full")" "$LIB"
  rm -rf "$ORT_DIR/wheel"
fi
