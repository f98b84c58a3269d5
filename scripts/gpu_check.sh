#!/usr/bin/env bash
# One GPU run, everything in one go (see ../shared/GPU.md): build, self-check, all tests (GPU
# ones included), compute-sanitizer memcheck on small cases of every CUDA kernel, benchmarks with
# JSON output, and a summary table printed last. Logs and results go to $OUT (default:
# benchmarks/results/latest); commit bench.json and summary.md under benchmarks/results/<card>/.
#
#   PYTHON=/opt/torch/.venv/bin/python scripts/gpu_check.sh
#
# Every step has a time limit (GPU time is scarce), so one slow step cannot eat the others.
# TESTS picks the tests (default: the GPU-marked ones; the CPU suite runs in CI), BENCH the
# benchmark files (one pytest run, limit and JSON each, merged into bench.json at the end), e.g.
# TESTS="tests/test_sac.py -m gpu" BENCH=benchmarks/bench_sac.py. SELFCHECK=0 skips `python -m
# pyops` (the tests cover it); WORKERS sets the test processes. PROFILE=1 adds
# scripts/profile_sac.py (profile.log: launches, host and device time per SAConv2d call). At most
# 8 files land in $OUT (9 with PROFILE=1).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/results/latest}"
mkdir -p "$OUT"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
# JAX would otherwise take 75% of the GPU in every test worker that imports it
export XLA_PYTHON_CLIENT_PREALLOCATE=false

TESTS="${TESTS:-tests -m gpu}"
BENCH="${BENCH:-$(ls benchmarks/bench_*.py)}"
XDIST=()
if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${WORKERS:-12}"); fi

failed=()
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED ($((SECONDS - t0)) s), last lines of $name.log:"
    tail -n 25 "$OUT/$name.log"
    failed+=("$name")
  fi
}

nvidia-smi -L
step build 300 "$PY" -m pip install --no-build-isolation --no-deps -e .
if [ "${SELFCHECK:-1}" = 1 ]; then step selfcheck 60 "$PY" -m pyops; fi
# shellcheck disable=SC2086  # TESTS and BENCH are word lists
step tests "${TESTS_LIMIT:-180}" "$PY" -m pytest $TESTS -q -p no:cacheprovider "${XDIST[@]}" -o addopts="-ra"
step sanitize "${SANITIZE_LIMIT:-120}" compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" scripts/sanitize_cases.py
if "$PY" -c "import pyops.jax" 2>/dev/null; then
  step sanitize_jax "${SANITIZE_LIMIT:-120}" compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" scripts/sanitize_jax.py
fi
if [ "${PROFILE:-0}" = 1 ]; then step profile "${PROFILE_LIMIT:-90}" "$PY" scripts/profile_sac.py; fi
runs=()
for f in $BENCH; do
  name=$(basename "$f" .py)
  rm -f "/tmp/$name.json"
  step "$name" "${BENCH_LIMIT:-90}" "$PY" -m pytest "$f" -q -p no:cacheprovider --benchmark-json "/tmp/$name.json"
  cat "$OUT/$name.log" >>"$OUT/bench.log" && rm "$OUT/$name.log"
  # a run cut short leaves an empty file behind
  if "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "/tmp/$name.json" 2>/dev/null; then runs+=("/tmp/$name.json"); fi
  # merged after every file, so a run cut short still brings back what it measured
  if [ ${#runs[@]} -gt 0 ]; then
    "$PY" benchmarks/summarize.py "${runs[@]}" --merge "$OUT/bench.json" >"$OUT/summary.md"
  fi
done

echo
cat "$OUT/selfcheck.log" 2>/dev/null | tail -n 12
grep -E "^(FAILED|ERROR) " "$OUT/tests.log"
grep -E "passed|failed" "$OUT/tests.log" | tail -n 1
grep -E "ERROR SUMMARY" "$OUT"/sanitize*.log
cat "$OUT/summary.md" 2>/dev/null
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps ok"
