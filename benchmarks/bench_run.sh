#!/usr/bin/env bash
# The default `backprop-oracle run` timed cold (empty JAX compilation cache) and warm (the
# cache the cold run left), and, when OLD_TREE names a package tree of another version (a
# folder with backprop_oracle/ laid out as installed, see .ci/lint), that version's run first,
# as the baseline measured on the same machine in the same session.
#
#     bash benchmarks/bench_run.sh            # or: OLD_TREE=/tmp/oldtree bash benchmarks/bench_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timed() {  # label, then the command
  local label=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$work/$label.log" 2>&1 || true
  printf '%-10s %6.1f s  %s\n' "$label" "$(echo "$(date +%s.%N) - $start" | bc)" \
    "$(grep -o '[0-9]* cases:.*' "$work/$label.log" | head -1)"
}
if [ -n "${OLD_TREE:-}" ]; then
  timed baseline env PYTHONSAFEPATH=1 PYTHONPATH="$OLD_TREE" "$py" -m backprop_oracle.cli run \
    --out "$work/old"
fi
timed cold env BO_COMPILE_CACHE="$work/cache" "$py" -m backprop_oracle.cli run --out "$work/cold"
timed warm env BO_COMPILE_CACHE="$work/cache" "$py" -m backprop_oracle.cli run --out "$work/warm"
