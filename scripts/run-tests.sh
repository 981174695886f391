#!/bin/sh
# Runs the test binary of each build directory given and closes with one
# line that adds them up: "N passed, N failed" (CI reads that line).
set -u
total_pass=0
total_fail=0
total_skip=0
status=0
for dir in "$@"; do
  bin="$dir/kiln_tests"
  log="$dir/test-log.txt"
  if [ ! -x "$bin" ]; then
    echo "run-tests: $bin was not built"
    total_fail=$((total_fail + 1))
    status=1
    continue
  fi
  echo "== kiln tests: $dir (device: ${KILN_TEST_DEVICE:-cpu})"
  # A cache directory per build keeps the sanitizer run from reusing kernels
  # that the plain run built only when the key differs; kernels themselves
  # are never instrumented, so sharing one cache between the two is safe.
  KILN_CACHE_DIR="${KILN_CACHE_DIR:-$(pwd)/build-cache}" "$bin" >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "run-tests: $bin ended without a summary (exit $rc)"
    total_fail=$((total_fail + 1))
    status=1
    continue
  fi
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  total_skip=$((total_skip + ${s:-0}))
  [ "$rc" -eq 0 ] || status=1
done
if [ "$total_skip" -gt 0 ]; then
  echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
  echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" -eq 0 ] || status=1
exit $status
