#!/usr/bin/env bash
# One GPU run on a fresh H100/H200 machine (16 cores), everything in one go within 8 minutes
# (see ../shared/GPU.md):
#   1. build (all cores);
#   2. checks, side by side, each under its own limit: the GPU tests, the budget tests
#      (tests/test_budgets.py, sync debug mode), compute-sanitizer memcheck, racecheck, initcheck and
#      synccheck on scripts/sanitize_cases.py (CUDA and Triton backends) and scripts/sanitize_jax.py,
#      the static kernel report (scripts/kernel_report.py; the last two only where present);
#   3. every benchmark case of the specs (`-m gpu`), one family at a time with nothing beside it;
#   4. summary.md (README-ready: stages, test counts, sanitizer errors, the benchmark table), last.
#
#   PYTHON=/opt/torch/.venv/bin/python scripts/gpu_check.sh
#
# Everything lands in ONE folder named after the card, <results>/<card>-<date>/, 8 files: summary.md
# bench.json bench.log build.log checks.log sanitize.log kernels.md kernels.json. <results> is
# $RESULTS, else $OUT when set (the device tool's folder that comes back), else benchmarks/results;
# commit the folder as it is under benchmarks/results/.
#
# Time budget, seconds (each stage is stopped at its limit, so a slow one cannot starve the rest; a
# stopped benchmark file still writes what it measured):
#   build 145 + checks 115 (side by side) + benchmarks 170 (pointrend 40, linformer 55, sac 35,
#   ada 40) = 430, plus ~10 to start and summarise and at most 5 per stage that ignores the stop
#   signal (6 in sequence): under 8 minutes.
#
# Knobs (environment):
#   PYTHON          the interpreter (default python3)
#   RESULTS         the folder the card's folder is made in (default: $OUT if set, else benchmarks/results)
#   TESTS           pytest arguments of the GPU tests (default "tests -m gpu", budget tests apart)
#   WORKERS         pytest-xdist processes for the tests, when xdist is installed (default 8)
#   BENCH           benchmark files (default benchmarks/bench_*.py); BENCH_ARGS their pytest
#                   arguments (default "-m gpu": the CPU cases are timed on the development machine)
#   SANITIZE_TOOLS  compute-sanitizer tools (default "memcheck racecheck initcheck synccheck")
#   SANITIZE_BACKENDS  backends of sanitize_cases.py (default "cuda triton")
#   BUILD_LIMIT TESTS_LIMIT SANITIZE_LIMIT REPORT_LIMIT  per-stage limits in seconds (145, 115, 115, 115)
#   BENCH_LIMIT     one limit for every benchmark file (default: the table above)
#   SKIP_BUILD=1    use the build already installed (a rerun on a warm machine)
#   SELFCHECK=1     add `python -m pyops` to the checks; PROFILE=1 add scripts/profile_sac.py after
#                   the benchmarks (into bench.log)
#   SANITIZER       the compute-sanitizer binary (default: on PATH, else /usr/local/cuda/bin)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python3}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
# JAX would otherwise take 75% of the GPU in every process that imports it
export XLA_PYTHON_CLIENT_PREALLOCATE=false
T_START=$SECONDS

BUILD_LIMIT="${BUILD_LIMIT:-145}"
TESTS_LIMIT="${TESTS_LIMIT:-115}"
SANITIZE_LIMIT="${SANITIZE_LIMIT:-115}"
REPORT_LIMIT="${REPORT_LIMIT:-115}"
SANITIZE_TOOLS="${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}"
SANITIZE_BACKENDS="${SANITIZE_BACKENDS:-cuda triton}"
BENCH="${BENCH:-$(ls benchmarks/bench_*.py)}"
BENCH_ARGS="${BENCH_ARGS:--m gpu}"
SANITIZER="${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}"
BUDGETS=tests/test_budgets.py
REPORT=scripts/kernel_report.py
if [ -z "${TESTS:-}" ]; then
  TESTS="tests -m gpu"
  if [ -f "$BUDGETS" ]; then TESTS="$TESTS --ignore=$BUDGETS"; fi
fi

bench_limit() {  # bench_limit FILE: seconds for one benchmark file
  if [ -n "${BENCH_LIMIT:-}" ]; then echo "$BENCH_LIMIT"; return; fi
  case $(basename "$1" .py) in
    bench_linformer) echo 55 ;;
    bench_sac) echo 35 ;;
    *) echo 40 ;;
  esac
}

# ---- the card names the results folder -----------------------------------------------------------
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
GPU_NAME=${GPU_NAME:-unknown GPU}
SLUG=$(echo "$GPU_NAME" | sed -e 's/^NVIDIA //' | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed -e 's/^-//' -e 's/-$//')
DATE=$(date -u +%Y-%m-%d)
RESULTS="${RESULTS:-${OUT:-benchmarks/results}}"
OUT="$RESULTS/$SLUG-$DATE"
n=2
while [ -e "$OUT" ]; do OUT="$RESULTS/$SLUG-$DATE-$n"; n=$((n + 1)); done
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

planned=$((BUILD_LIMIT + $(printf '%s\n' "$TESTS_LIMIT" "$SANITIZE_LIMIT" "$REPORT_LIMIT" | sort -n | tail -n 1)))
for f in $BENCH; do planned=$((planned + $(bench_limit "$f"))); done
echo "== $GPU_NAME -> $OUT; stages planned at most $planned s"
if [ "$planned" -gt 440 ]; then echo "== warning: the limits add up to $planned s, more than fit in 8 minutes"; fi

# ---- stages: each runs under `timeout` in its own process group, logs to $TMP/NAME.log -----------
STAGES=() SANITIZE=()
start() {  # start NAME LIMIT CMD...: run CMD in the background under its own limit
  local name=$1 limit=$2; shift 2
  STAGES+=("$name")
  echo "$limit" >"$TMP/$name.limit"
  (
    t0=$SECONDS
    timeout -k 5 "$limit" "$@" >"$TMP/$name.log" 2>&1
    echo "$? $((SECONDS - t0))" >"$TMP/$name.rc"
  ) &
}
status() {  # status NAME: ok / FAILED (rc N) / stopped at its limit / not run
  local rc
  if [ ! -f "$TMP/$1.rc" ]; then echo "not run"; return; fi
  read -r rc _ <"$TMP/$1.rc"
  case $rc in
    0) echo ok ;;
    124 | 137) echo "stopped at its limit" ;;
    *) echo "FAILED (rc $rc)" ;;
  esac
}
seconds() { if [ -f "$TMP/$1.rc" ]; then cut -d' ' -f2 "$TMP/$1.rc"; else echo -; fi; }
report() {  # report NAME: one console line per finished stage
  echo "== $1: $(status "$1") ($(seconds "$1") s)"
  if [ "$(status "$1")" != ok ]; then tail -n 15 "$TMP/$1.log"; fi
}
collect() {  # collect FILE NAME...: append the stages' logs, each under a header, to $OUT/FILE
  local file=$1 name; shift
  for name in "$@"; do
    if [ -f "$TMP/$name.log" ]; then
      printf '\n===== %s: %s (%s s) =====\n' "$name" "$(status "$name")" "$(seconds "$name")" >>"$OUT/$file"
      cat "$TMP/$name.log" >>"$OUT/$file"
    fi
  done
}

# ---- 1. machine and build ------------------------------------------------------------------------
{
  echo "card: $GPU_NAME"
  nvidia-smi 2>&1 | head -n 20
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
  "$SANITIZER" --version 2>&1 | tail -n 1
} >"$OUT/build.log" 2>&1
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  start build "$BUILD_LIMIT" "$PY" -m pip install --no-build-isolation --no-deps -e .
  wait
  report build
  collect build.log build
fi

# ---- 2. checks, side by side ---------------------------------------------------------------------
if [ "$(status build)" = ok ] || [ "${SKIP_BUILD:-0}" = 1 ]; then
  XDIST=()
  if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${WORKERS:-8}"); fi
  # many processes share 16 cores here: keep each one's CPU thread pool small
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
  # shellcheck disable=SC2086  # TESTS, SANITIZE_BACKENDS, BENCH_ARGS and BENCH are word lists
  start tests "$TESTS_LIMIT" "$PY" -m pytest $TESTS -q -p no:cacheprovider "${XDIST[@]}" -o addopts="-ra"
  if [ -f "$BUDGETS" ]; then
    start budgets "$TESTS_LIMIT" "$PY" -m pytest "$BUDGETS" -m gpu -q -p no:cacheprovider -o addopts="-ra"
  fi
  if [ -f "$REPORT" ]; then
    start kernel_report "$REPORT_LIMIT" "$PY" "$REPORT" --check --out "$OUT"
  fi
  if [ "${SELFCHECK:-0}" = 1 ]; then start selfcheck "$TESTS_LIMIT" "$PY" -m pyops; fi
  HAS_JAX=0
  if "$PY" -c "import pyops.jax" 2>/dev/null; then HAS_JAX=1; fi
  for tool in $SANITIZE_TOOLS; do
    # shellcheck disable=SC2086
    start "sanitize-$tool" "$SANITIZE_LIMIT" "$SANITIZER" --tool "$tool" --error-exitcode 1 "$PY" scripts/sanitize_cases.py $SANITIZE_BACKENDS
    if [ "$HAS_JAX" = 1 ]; then
      start "sanitize_jax-$tool" "$SANITIZE_LIMIT" "$SANITIZER" --tool "$tool" --error-exitcode 1 "$PY" scripts/sanitize_jax.py
    fi
  done
  wait
  unset OMP_NUM_THREADS
  CHECKS=(tests budgets kernel_report selfcheck)
  SANITIZE=()
  for tool in $SANITIZE_TOOLS; do SANITIZE+=("sanitize-$tool" "sanitize_jax-$tool"); done
  for name in "${CHECKS[@]}" "${SANITIZE[@]}"; do
    if [ -f "$TMP/$name.limit" ]; then report "$name"; fi
  done
  collect checks.log "${CHECKS[@]}"
  collect sanitize.log "${SANITIZE[@]}"

  # ---- 3. benchmarks, one file at a time, nothing beside them -------------------------------------
  runs=()
  for f in $BENCH; do
    name=$(basename "$f" .py)
    # shellcheck disable=SC2086
    start "$name" "$(bench_limit "$f")" "$PY" -m pytest "$f" $BENCH_ARGS -q -p no:cacheprovider --benchmark-json "$TMP/$name.json"
    wait
    report "$name"
    collect bench.log "$name"
    # a file stopped at its limit still writes the entries it measured; one with none writes nothing
    if "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$TMP/$name.json" 2>/dev/null; then runs+=("$TMP/$name.json"); fi
    # merged after every file, so a run cut short still brings back what it measured
    if [ ${#runs[@]} -gt 0 ]; then
      "$PY" benchmarks/summarize.py "${runs[@]}" --merge "$OUT/bench.json" >"$TMP/bench_table.md"
    fi
  done
  if [ "${PROFILE:-0}" = 1 ]; then
    start profile 90 "$PY" scripts/profile_sac.py
    wait
    report profile
    collect bench.log profile
  fi
fi

# ---- 4. summary.md, last -------------------------------------------------------------------------
{
  echo "# GPU run: $GPU_NAME, $DATE"
  echo
  echo "$(grep -E '^(commit|python|triton)' "$OUT/build.log" | paste -sd ';' - | sed 's/;/; /g'); \`scripts/gpu_check.sh\`, $((SECONDS - T_START)) s in all."
  echo
  echo "| stage | result | seconds | limit |"
  echo "|---|---|---|---|"
  for name in "${STAGES[@]}"; do
    echo "| $name | $(status "$name") | $(seconds "$name") | $(cat "$TMP/$name.limit") |"
  done
  for name in tests budgets; do
    if [ -f "$TMP/$name.log" ]; then
      echo
      echo "## $name"
      echo
      echo '```'
      grep -E "^(FAILED|ERROR) " "$TMP/$name.log" | head -n 40
      grep -E " in [0-9.]+s( \(.*\))?$" "$TMP/$name.log" | tail -n 1  # pytest's last line
      echo '```'
    fi
  done
  if [ ${#SANITIZE[@]} -gt 0 ]; then
    echo
    echo "## compute-sanitizer"
    echo
    echo "| tool | script | result | errors | last progress line |"
    echo "|---|---|---|---|---|"
    for name in "${SANITIZE[@]}"; do
      if [ -f "$TMP/$name.log" ]; then
        errors=$(grep -E "ERROR SUMMARY" "$TMP/$name.log" | tail -n 1 | sed 's/^=* *//')
        reached=$(grep -E "^sanitize" "$TMP/$name.log" | tail -n 1)
        case $name in sanitize_jax-*) script=sanitize_jax.py ;; *) script=sanitize_cases.py ;; esac
        echo "| ${name#*-} | $script | $(status "$name") | ${errors:-no summary} | ${reached:--} |"
      fi
    done
  fi
  if [ -f "$TMP/kernel_report.log" ]; then
    echo
    echo "## static kernel report ($(status kernel_report); kernels.md, kernels.json)"
    echo
    echo '```'
    tail -n 12 "$TMP/kernel_report.log"
    echo '```'
  fi
  echo
  echo "## benchmarks"
  echo
  if [ -f "$TMP/bench_table.md" ]; then cat "$TMP/bench_table.md"; else echo "no benchmark entries"; fi
} >"$OUT/summary.md"

echo
cat "$OUT/summary.md"
echo
failed=()
for name in "${STAGES[@]}"; do if [ "$(status "$name")" != ok ]; then failed+=("$name"); fi; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "not ok: ${failed[*]} (results in $OUT)"
  exit 1
fi
echo "all stages ok (results in $OUT)"
