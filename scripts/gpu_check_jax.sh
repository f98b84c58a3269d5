#!/usr/bin/env bash
# A short GPU run for the JAX binding and the CUDA kernels it shares with the torch ops: build
# (pyops._C and pyops._jax_ffi), the JAX tests (GPU cases included), the torch GPU tests of the
# shared kernels, then compute-sanitizer memcheck on small cases of the torch and JAX paths.
# Logs go to $OUT (default: benchmarks/results/latest).
#
#   PYTHON=/opt/torch/.venv/bin/python scripts/gpu_check_jax.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/results/latest}"
mkdir -p "$OUT"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false

failed=()
step() {
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED ($((SECONDS - t0)) s), last lines of $name.log:"
    tail -n 30 "$OUT/$name.log"
    failed+=("$name")
  fi
}

step versions "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
step build "$PY" -m pip install --no-build-isolation --no-deps -v -e .
step jax_tests "$PY" -m pytest tests/test_jax.py -q -p no:cacheprovider -rs
step torch_gpu_tests "$PY" -m pytest tests/test_pointrend.py tests/test_linformer.py tests/test_ada.py -q -m gpu \
  -p no:cacheprovider -x
step sanitize_jax timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" scripts/sanitize_jax.py
step sanitize_torch timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" scripts/sanitize_cases.py

echo
head -n 3 "$OUT/versions.log"
grep -E "passed|failed" "$OUT/jax_tests.log" | tail -n 1
grep -E "passed|failed" "$OUT/torch_gpu_tests.log" | tail -n 1
grep -E "ERROR SUMMARY" "$OUT/sanitize_torch.log" "$OUT/sanitize_jax.log"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
echo "all steps ok"
