#!/bin/sh
# One scripted GPU session (device time is scarce): build, the whole test
# suite on the GPU, the benchmarks (CUDA and CPU), with full logs in $OUT.
# Usage on the GPU machine: sh scripts/gpu-check.sh [test-filter]
# (OUT: the log folder; BENCH_TIMEOUT, BENCHES: see below)
set -u
OUT=${OUT:-/tmp/kiln-gpu-out}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
{
  date -u
  # The device machine's copy of .git can lag the working tree it was
  # sent (seen: an older commit printed for a newer tree), so the commit
  # is given by the caller (KILN_COMMIT) where it knows it.
  echo "commit: ${KILN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown) (per the machine's .git, which can lag the tree)}"
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

# The GPU benchmarks, each with its log and a time limit (a hung kiln call
# must not eat the session); BENCH_TIMEOUT seconds each, 180 by default.
# BENCHES names a subset (e.g. "bench_qr bench_solve").
if [ -z "${1:-}" ]; then
  for name in ${BENCHES:-bench_cuda bench_linalg bench_qr bench_solve}; do
    echo "== $name"
    timeout "${BENCH_TIMEOUT:-180}" "build-gpu/$name" >"$OUT/$name.txt" 2>&1
    rc=$?
    cat "$OUT/$name.txt"
    [ "$rc" -eq 0 ] ||
      echo "$name exited with status $rc" | tee -a "$OUT/$name.txt"
  done
  build-gpu/kiln_demo >"$OUT/demo.txt" 2>&1
  cat "$OUT/demo.txt"
fi
