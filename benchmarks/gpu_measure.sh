#!/usr/bin/env bash
# Everything in docs/gpu.md's "To measure" list, in one go, sized to about 8 minutes:
#
#   bash benchmarks/gpu_measure.sh OUT
#
# run from the repository root (any directory works: it changes to the root itself). OUT gets
# at most 8 files, each well under 16 MiB:
#
#   gpu_measure.log        every step's output, with a UTC timestamp per step (and a
#                          heartbeat while the parallel steps run), so a cut-off run still
#                          tells how far it got
#   environment.json       nvidia-smi, versions, CUDA/JAX devices, every oracle's effective
#                          precision switches per device, smoke runs of every oracle
#   tables.md              the tables for docs/gpu.md (benchmarks/gpu_tables.py)
#   raw.json               the figures behind them
#   run-summary.md         the project's own summary of the `backprop-oracle run` matrix
#   run-report.html        its HTML report
#   run-records.jsonl.gz   its records
#   pytest-summary.md      the property suite's --bo-report summary
#
# Steps. Each runs under `timeout` (SIGTERM, SIGKILL 15 s later); a failed or timed-out step
# is reported and the next one runs. Every timeout is also cut to what is left of the overall
# budget (BO_GPU_BUDGET = 450 s from the start), so the script ends within about 7.5 minutes
# whatever happens; with a fast install it ends after about 7:
#
#   1. install   pip install --no-deps --no-build-isolation -e .         (<= 60 s)
#                (falls back to a PYTHONPATH shim when pip cannot install)
#   2. env       gpu_tables.py env: environment.json + smoke runs of every oracle, device,
#                precision and mode on two tiny cases (API breaks show up here)  (<= 75 s)
#   3. figures   gpu_figures.py: torch and jax, cpu and gpu, strict and default, float32 and
#                float64, FIG_CASES cases per family (mlp, cnn, softmax) and dtype, FIG_REPEATS
#                runs each: per-element TF32 check, spread, GPU vs CPU, time per run; alone,
#                so that the timings are clean; stops drawing cases at its budget  (<= 150 s)
#   4. parallel phase, every process at once on the GPU machine            (<= 240 s)
#      pytest                  the property suite's device tests (-k BO_GPU_PYTEST_K) under
#                              BO_PROFILE=gpu capped at BO_GPU_MAX_EXAMPLES examples
#                              (benchmarks/gpu_pytest_cap.py; tests that would start after
#                              the deadline are skipped, so the report is still written)
#      figures-xla-det         gpu_figures.py, jax on gpu, with
#                              XLA_FLAGS=--xla_gpu_deterministic_ops=true
#      run-FAMILY-DTYPE-PREC   backprop-oracle run --devices cpu,cuda,gpu, one process per
#                              family, dtype and (for mlp and cnn) precision: 12 processes;
#                              cut off, a run still writes the summary of its finished cases
#   5. merge-run  the run directories merged, the project's summary built once  (<= 30 s)
#   6. tables     tables.md and raw.json                                         (<= 25 s)
#
# Sizes (environment variables): BO_GPU_RUN_CASES ("mlp:8:p cnn:10:p softmax:12 graph:12":
# cases per family; ":p" runs strict and default in separate processes), BO_GPU_FIG_CASES (4),
# BO_GPU_FIG_REPEATS (5), BO_GPU_MAX_EXAMPLES (10), BO_GPU_PYTEST_K ("cuda or gpu or
# device_study"), BO_GPU_JOBS (processes at a time; default the number of cores, at most 16),
# BO_GPU_BUDGET (450), PYTHON (python3); BO_GPU_KEEP_WORK=1 keeps the scratch directory.

set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_measure.sh OUT" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

PY=${PYTHON:-python3}
T0=$(date +%s)
BUDGET=${BO_GPU_BUDGET:-450}
DEADLINE=$((T0 + BUDGET))
NPROC=$(nproc 2>/dev/null || echo 2)
JOBS=${BO_GPU_JOBS:-$(( NPROC < 16 ? NPROC : 16 ))}
RUN_CASES=${BO_GPU_RUN_CASES:-"mlp:8:p cnn:10:p softmax:12 graph:12"}
FIG_CASES=${BO_GPU_FIG_CASES:-4}
FIG_REPEATS=${BO_GPU_FIG_REPEATS:-5}
MAX_EXAMPLES=${BO_GPU_MAX_EXAMPLES:-10}
PYTEST_K=${BO_GPU_PYTEST_K:-"cuda or gpu or device_study"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bo-gpu.XXXXXX") || exit 2
LOG="$OUT/gpu_measure.log"
: > "$WORK/steps.tsv"

exec > >(tee -a "$LOG") 2>&1

export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the GPU
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 PIP_NO_INPUT=1  # nothing to download
export MPLBACKEND=Agg TQDM_DISABLE=1

stamp() { date -u +%T; }
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(stamp)] $*"; }

# run_step NAME MAX_SECONDS END_EPOCH COMMAND...: COMMAND under `timeout`, for at most
# MAX_SECONDS and never past END_EPOCH; output prefixed with [NAME]; one line in steps.tsv.
run_step() {
    local name=$1 max=$2 end=$3
    shift 3
    local t=$(( end - $(date +%s) ))
    (( t > max )) && t=$max
    if (( t < 5 )); then
        say "== $name: not started, the time budget is spent"
        printf '%s\t-\t0\t0\tnot started (budget spent)\n' "$name" >> "$WORK/steps.tsv"
        return 0
    fi
    say "== $name: start (timeout ${t} s; $(elapsed) s since start)"
    local s rc status
    s=$(date +%s)
    timeout -k 15 "$t" "$@" 2>&1 | sed -u "s/^/[$name] /"
    rc=${PIPESTATUS[0]}
    case $name:$rc in
        run-*:1) status="ok: exit 1, a divergence or one-sided NaN recorded (see tables.md)" ;;
        pytest:1) status="tests failed (exit 1)" ;;
        *:0) status="ok" ;;
        *:124) status="timed out after ${t} s (SIGTERM; partial results kept where the step saves them)" ;;
        *:137) status="killed (SIGKILL after the timeout, or out of memory)" ;;
        *) status="failed (exit $rc)" ;;
    esac
    say "== $name: $status; $(( $(date +%s) - s )) s"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" "$t" "$status" \
        >> "$WORK/steps.tsv"
    return 0
}

say "gpu_measure.sh: OUT=$OUT WORK=$WORK budget=${BUDGET} s cores=$NPROC jobs=$JOBS"
say "sizes: run cases {$RUN_CASES}; figures $FIG_CASES cases x $FIG_REPEATS repeats;" \
    "property suite max_examples=$MAX_EXAMPLES -k '$PYTEST_K'"
say "python: $(command -v "$PY") ($("$PY" --version 2>&1)); git: $(git rev-parse --short HEAD 2>/dev/null)" \
    "$(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files"
nvidia-smi -L 2>&1 | sed 's/^/[nvidia-smi] /' || true

# --- 1. install --------------------------------------------------------------------------------
run_step install 60 "$((DEADLINE - 390))" \
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
if ! "$PY" -c "import backprop_oracle.cli, backprop_oracle.oracles.torch_oracle" 2>/dev/null; then
    say "backprop_oracle does not import after the install step: using a PYTHONPATH shim"
    mkdir -p "$WORK/shim/backprop_oracle"
    for f in backprop_oracle/*; do ln -s "$REPO/$f" "$WORK/shim/backprop_oracle/"; done
    for d in reference oracles properties reports; do
        ln -s "$REPO/$d" "$WORK/shim/backprop_oracle/$d"
    done
    export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import backprop_oracle.cli" || say "the shim does not import either"
fi
for module in pebble cloudpickle; do  # runtime dependencies the GPU image may lack
    "$PY" -c "import $module" 2>/dev/null || say "WARNING: $module is not installed: carry its" \
        "wheel (pip download --no-deps -d .whl $module) and put it on PYTHONPATH; every run" \
        "step will fail without it"
done
PLUGIN_ARGS=()
if ! "$PY" -c "
import sys
from importlib.metadata import entry_points
sys.exit(0 if any(e.name == 'backprop_oracle' for e in entry_points(group='pytest11')) else 1)
" 2>/dev/null; then
    PLUGIN_ARGS=(-p backprop_oracle.pytest_plugin)  # not installed: load the plugin by name
fi

# --- 2. environment and smoke runs ----------------------------------------------------------
run_step env 75 "$((DEADLINE - 315))" "$PY" benchmarks/gpu_tables.py env "$OUT/environment.json"

# --- 3. figures, alone (timings) ----------------------------------------------------------------
FIG_END=$((DEADLINE - 210))
FIG_T=$(( FIG_END - $(date +%s) )); (( FIG_T > 150 )) && FIG_T=150
run_step figures 150 "$FIG_END" \
    "$PY" benchmarks/gpu_figures.py --cases "$FIG_CASES" --repeats "$FIG_REPEATS" \
    --budget "$(( FIG_T > 40 ? FIG_T - 25 : 15 ))" --out "$WORK/figures.json"

# --- 4. the parallel phase --------------------------------------------------------------------
PHASE_END=$((DEADLINE - 50))
(( PHASE_END - $(date +%s) > 240 )) && PHASE_END=$(( $(date +%s) + 240 ))
PHASE_T=$(( PHASE_END - $(date +%s) ))

# the run slices: family x dtype, and x precision for the families marked :p
SLICES=()
for spec in $RUN_CASES; do
    IFS=: read -r family cases split <<< "$spec"
    for dtype in float32 float64; do
        if [ "${split:-}" = p ]; then
            SLICES+=("$family $cases $dtype strict fd,torch,jax" "$family $cases $dtype default torch,jax")
        else
            SLICES+=("$family $cases $dtype strict,default fd,torch,jax")
        fi
    done
done
TASKS=$(( ${#SLICES[@]} + 2 ))
THREADS=$(( NPROC / TASKS )); (( THREADS < 1 )) && THREADS=1
say "== parallel phase: $TASKS processes, $JOBS at a time, OMP_NUM_THREADS=$THREADS for the" \
    "run slices, until $(date -u -d "@$PHASE_END" +%T 2>/dev/null || echo "+${PHASE_T} s")"

launch() {
    # the heartbeat is one of the running jobs
    while (( $(jobs -rp | wc -l) > JOBS )); do wait -n 2>/dev/null || sleep 1; done
    run_step "$@" &
}

heartbeat() {
    while sleep 30; do
        local counts=""
        for d in "$WORK"/run-*; do
            [ -f "$d/records.jsonl" ] && counts+=" ${d##*/}=$(wc -l < "$d/records.jsonl")"
        done
        say "heartbeat ($(elapsed) s): run records${counts:- none yet}"
    done
}
heartbeat &
HEARTBEAT=$!

BO_PROFILE=gpu BO_GPU_MAX_EXAMPLES=$MAX_EXAMPLES BO_GPU_DEADLINE=$(( PHASE_END - 30 )) \
    PYTHONPATH="$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}" \
    launch pytest 240 "$PHASE_END" \
    "$PY" -m pytest tests/properties -k "$PYTEST_K" -p gpu_pytest_cap "${PLUGIN_ARGS[@]}" \
    -p no:cacheprovider --continue-on-collection-errors --bo-report "$WORK/pytest" \
    --junitxml "$WORK/pytest.xml" -q -ra --durations=10
XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true" \
    launch figures-xla-det 240 "$PHASE_END" \
    "$PY" benchmarks/gpu_figures.py --frameworks jax --devices gpu --cases "$FIG_CASES" \
    --repeats "$FIG_REPEATS" --budget "$(( PHASE_T > 60 ? PHASE_T - 35 : 20 ))" \
    --out "$WORK/figures-xla-det.json"
for slice in "${SLICES[@]}"; do
    read -r family cases dtype precisions oracles <<< "$slice"
    name="run-$family-$dtype-${precisions/,/-}"
    OMP_NUM_THREADS=$THREADS launch "$name" 240 "$PHASE_END" \
        "$PY" -m backprop_oracle.cli run --families "$family" --dtypes "$dtype" \
        --devices cpu,cuda,gpu --precisions "$precisions" --oracles "$oracles" \
        --cases "$cases" --out "$WORK/$name"
done
wait $(jobs -rp | grep -v "^$HEARTBEAT\$") 2>/dev/null
kill "$HEARTBEAT" 2>/dev/null
wait "$HEARTBEAT" 2>/dev/null
say "== parallel phase done ($(elapsed) s since start)"

# --- 5. merge the run directories, 6. tables ---------------------------------------------------
run_step merge-run 30 "$((DEADLINE - 15))" \
    "$PY" benchmarks/gpu_tables.py merge-run "$WORK/run" "$WORK"/run-*-*-*
run_step tables 25 "$((DEADLINE + 5))" "$PY" benchmarks/gpu_tables.py tables "$WORK" "$OUT"

# --- the files that come back ---------------------------------------------------------------
copy() { [ -f "$1" ] && cp "$1" "$OUT/$2"; }
copy "$WORK/run/summary.md" run-summary.md
copy "$WORK/run/report.html" run-report.html
copy "$WORK/pytest/summary.md" pytest-summary.md
[ -f "$WORK/run/records.jsonl" ] && gzip -c "$WORK/run/records.jsonl" > "$OUT/run-records.jsonl.gz"
if [ ! -f "$OUT/tables.md" ]; then  # the tables step failed: keep the raw step outputs
    cat "$WORK/steps.tsv" > "$OUT/tables.md"
    for f in figures.json figures-xla-det.json; do
        [ -f "$WORK/$f" ] && { echo "== $f"; cat "$WORK/$f"; } >> "$OUT/raw.json"
    done
fi
LIMIT=$((16 * 1024 * 1024 - 65536))
for f in "$OUT"/*; do
    size=$(stat -c %s "$f")
    if (( size > LIMIT )) && [ "$f" != "$LOG" ]; then
        say "$(basename "$f"): $size bytes, over the limit: truncated"
        truncate -s "$LIMIT" "$f"
    fi
done
say "== done in $(elapsed) s; steps:"
column -t -s $'\t' "$WORK/steps.tsv" 2>/dev/null || cat "$WORK/steps.tsv"
ls -l "$OUT"
count=$(find "$OUT" -maxdepth 1 -type f | wc -l)
(( count > 8 )) && say "warning: $count files in $OUT (only 8 come back)"
if [ "${BO_GPU_KEEP_WORK:-0}" = 1 ]; then say "scratch kept: $WORK"; else rm -rf "$WORK"; fi
# the log itself: keep it under the limit (head and tail) once nothing writes to it any more
exec >&- 2>&-
sleep 1
if (( $(stat -c %s "$LOG") > LIMIT )); then
    { head -c 4000000 "$LOG"; echo; echo "... (cut) ..."; tail -c 8000000 "$LOG"; } > "$LOG.cut"
    mv "$LOG.cut" "$LOG"
fi
exit 0
