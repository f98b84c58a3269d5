#!/usr/bin/env bash
# One GPU run, everything in one go (see ../shared/GPU.md): build, self-check, all tests (GPU
# ones included), compute-sanitizer memcheck on small cases of every CUDA kernel, benchmarks with
# JSON output, and a summary table printed last. Logs and results go to $OUT (default:
# benchmarks/results/latest); commit bench.json and summary.md under benchmarks/results/<card>/.
#
#   PYTHON=/opt/torch/.venv/bin/python scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/results/latest}"
mkdir -p "$OUT"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1

failed=()
step() {
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED ($((SECONDS - t0)) s), last lines of $name.log:"
    tail -n 25 "$OUT/$name.log"
    failed+=("$name")
  fi
}

step build "$PY" -m pip install --no-build-isolation --no-deps -e .
step selfcheck "$PY" -m pyops
step tests "$PY" -m pytest tests -q -p no:cacheprovider -o addopts="-ra"
step sanitize compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" scripts/sanitize_cases.py
step bench "$PY" -m pytest benchmarks -q -p no:cacheprovider --benchmark-json "$OUT/bench.json"
if [ -f "$OUT/bench.json" ]; then
  "$PY" benchmarks/summarize.py "$OUT/bench.json" >"$OUT/summary.md"
fi

echo
cat "$OUT/selfcheck.log" 2>/dev/null | tail -n 12
grep -E "passed|failed" "$OUT/tests.log" | tail -n 1
grep -E "ERROR SUMMARY" "$OUT/sanitize.log"
cat "$OUT/summary.md" 2>/dev/null
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps ok"
