#!/bin/sh
# One scripted GPU session (device time is scarce): build, the whole test
# suite on the GPU, the benchmarks (CUDA and CPU), with full logs in $OUT.
# Usage on the GPU machine: sh scripts/gpu-check.sh [test-filter]
set -u
OUT=${OUT:-/tmp/kiln-gpu-out}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
{
  date -u
  git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j "$JOBS" >>"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
build-gpu/kiln info >"$OUT/info.txt" 2>&1
cat "$OUT/info.txt"

export KILN_CACHE_DIR="$PWD/build-gpu/cache"
KILN_TEST_DEVICE=gpu build-gpu/kiln_tests -j 4 ${1:-} >"$OUT/test-gpu.log" 2>&1
grep -E '^(FAIL|timeout)|passed, ' "$OUT/test-gpu.log"

if [ -z "${1:-}" ]; then
  build-gpu/bench_cuda >"$OUT/bench_cuda.txt" 2>&1
  cat "$OUT/bench_cuda.txt"
  build-gpu/bench_linalg >"$OUT/bench_linalg.txt" 2>&1
  cat "$OUT/bench_linalg.txt"
  build-gpu/kiln_demo >"$OUT/demo.txt" 2>&1
  cat "$OUT/demo.txt"
fi
