#!/bin/sh
# Runs the test binary of each build directory given and closes with one
# line that adds them up: "N passed, N failed" (CI reads that line).
#
#   scripts/run-tests.sh [--nvrtc TARGET] DIR...
#
# With --nvrtc (make test uses sm_90a), the conformance and doc tests of the
# first DIR run once more with KILN_TEST_NVRTC_TARGET=TARGET (every kernel
# they launch through the test helpers is also generated and compiled by
# NVRTC for that CUDA target, without a GPU), and so do the *_nvrtc tests,
# which compile every kernel configuration each linalg driver can launch;
# a dialect or library-kernel regression on CUDA fails CI. (The other linalg
# tests launch their kernels inside the library, where the helpers cannot
# see them, so running them again would only repeat the CPU run.) Skipped, with a
# note, when NVRTC is not installed.
set -u
total_pass=0
total_fail=0
total_skip=0
status=0
nvrtc_target=""
if [ "${1:-}" = "--nvrtc" ]; then
  nvrtc_target="${2:-}"
  shift 2
fi

# run_suite LABEL BIN LOG [FILTER]: runs one suite (the environment is the
# caller's) and adds its summary line to the totals.
run_suite() {
  label=$1 bin=$2 log=$3
  shift 3
  echo "== kiln tests: $label"
  # A cache directory per build keeps the sanitizer run from reusing kernels
  # that the plain run built only when the key differs; kernels themselves
  # are never instrumented, so sharing one cache between the two is safe.
  KILN_CACHE_DIR="${KILN_CACHE_DIR:-$(pwd)/build-cache}" "$bin" "$@" \
    >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "run-tests: $bin ended without a summary (exit $rc)"
    total_fail=$((total_fail + 1))
    status=1
    return
  fi
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  total_skip=$((total_skip + ${s:-0}))
  [ "$rc" -eq 0 ] || status=1
}

# nvrtc_works DIR: compiles a trivial kernel for the target with the CLI;
# prints why not and fails when NVRTC is absent or cannot.
nvrtc_works() {
  probe=$(mktemp -d "${TMPDIR:-/tmp}/kiln-nvrtc-probe.XXXXXX") || return 1
  echo 'y[0] = 1.0f;' >"$probe/probe.metal"
  why=$("$1/kiln" compile --name nvrtc_probe --source "$probe/probe.metal" \
    --output y:float32:1 --target "$nvrtc_target" --out-dir "$probe" \
    2>&1 >/dev/null)
  ok=$?
  rm -rf "$probe"
  [ "$ok" -eq 0 ] && return 0
  echo "$why" | tail -n 1
  return 1
}

first=""
for dir in "$@"; do
  bin="$dir/kiln_tests"
  if [ ! -x "$bin" ]; then
    echo "run-tests: $bin was not built"
    total_fail=$((total_fail + 1))
    status=1
    continue
  fi
  [ -n "$first" ] || first=$dir
  run_suite "$dir (device: ${KILN_TEST_DEVICE:-cpu})" "$bin" \
    "$dir/test-log.txt"
done

if [ -n "$nvrtc_target" ] && [ -n "$first" ]; then
  if note=$(nvrtc_works "$first"); then
    for filter in conf_ doc_ _nvrtc; do
      KILN_TEST_NVRTC_TARGET=$nvrtc_target run_suite \
        "$first, $filter* also compiled by NVRTC for $nvrtc_target" \
        "$first/kiln_tests" "$first/test-log-nvrtc-$filter.txt" "$filter"
    done
  else
    echo "== NVRTC check for $nvrtc_target skipped: NVRTC is not usable" \
      "here ($note)"
  fi
fi

if [ "$total_skip" -gt 0 ]; then
  echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
  echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" -eq 0 ] || status=1
exit $status
