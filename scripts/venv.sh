# Sourced by the check scripts: `venv DIR "import a, b" PACKAGE==VERSION...` makes DIR a
# virtualenv holding the pinned packages, once; nothing happens when the import already works.
venv() {
  local dir=$1 check=$2
  shift 2
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c "$check" 2>/dev/null; then
    echo "$(basename "$0" .sh): installing $* into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "$@"
  fi
}
