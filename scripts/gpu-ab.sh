#!/bin/sh
# On the GPU machine: A/B the candidate trees ab_*/ (scripts/ab-prepare.sh)
# against the working tree in ONE call. The working tree gets the whole of
# scripts/gpu-check.sh (suite and benchmarks: BENCHES selects them); each
# candidate is built beside it (only kiln_tests and the benchmarks named in
# AB_LINES), runs the GPU tests named by AB_TESTS (prefixes) and every
# AB_LINES entry (program:label-filter), each right after the working
# tree's own run of the same line, so both see the same machine state.
# A candidate prepared with its own AB_TESTS / AB_LINES (ab-prepare.sh
# keeps them in ab_<name>/.ab) runs those instead.
# Example:
#   AB_TESTS="linalg_lu linalg_qr" AB_LINES="bench_solve:LU bench_qr:100000" \
#   BENCHES="bench_qr bench_solve" sh scripts/gpu-ab.sh
# Logs under $OUT (tar them: at most 8 files come back). GPU_AB_SKIP_CHECK=1
# skips gpu-check.sh and uses an existing build ($BUILD, build-gpu by
# default); GPU_AB_SKIP_CHECK=build skips its tests and benchmarks but
# builds $BUILD beside the candidates (kiln_tests and the AB_LINES
# programs). AB_DEVICE (gpu by default) is the tests' KILN_TEST_DEVICE;
# AB_TEST_TIMEOUT (120 s) bounds each AB_TESTS prefix. A candidate's .ab
# may also set AB_POST, a command run after its lines, from the
# repository root, with AB_BUILD its build folder (e.g. a probe program
# built against $AB_BUILD/libkiln.a).
set -u
BUILD=${BUILD:-build-gpu}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
OUT=${OUT:-/tmp/kiln-gpu-out}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
# The candidate's own AB_TESTS / AB_LINES (ab_<name>/.ab), else the
# environment's.
G_TESTS=${AB_TESTS:-}
G_LINES=${AB_LINES:-}
ab_settings() {
  AB_TESTS=$G_TESTS
  AB_LINES=$G_LINES
  AB_POST=
  [ -f "$1/.ab" ] && . "./$1/.ab"
}
all_progs=
for d in ab_*/; do
  [ -d "$d" ] || continue
  n=${d%/}
  ab_settings "$n"
  progs=$(for l in $AB_LINES; do echo "${l%%:*}"; done | sort -u)
  all_progs="$all_progs $progs"
  (cmake -S "$n" -B "b_$n" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null 2>&1 &&
     cmake --build "b_$n" -j "$JOBS" --target kiln_tests $progs \
       >"$OUT/$n-build.log" 2>&1
   echo "$n build rc=$?" >>"$OUT/$n-build.log") &
done
case ${GPU_AB_SKIP_CHECK:-0} in
  1) ;;
  build)
    progs=$(for p in $all_progs; do echo "$p"; done | sort -u)
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
      cmake --build "$BUILD" -j "$JOBS" --target kiln_tests $progs \
        >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; } ;;
  *) OUT="$OUT" sh scripts/gpu-check.sh ;;
esac
wait
export KILN_CACHE_DIR="$BUILD/cache"
for d in ab_*/; do
  [ -d "$d" ] || continue
  n=${d%/}
  echo "== $n"
  tail -1 "$OUT/$n-build.log"
  ab_settings "$n"
  for t in $AB_TESTS; do
    KILN_TEST_DEVICE=${AB_DEVICE:-gpu} timeout "${AB_TEST_TIMEOUT:-120}" \
      "b_$n/kiln_tests" -j 4 "$t" \
      >"$OUT/$n-test-$t.log" 2>&1
    echo "$n tests $t: $(grep -E '^(FAIL|timeout)|passed, ' "$OUT/$n-test-$t.log" | tr '\n' ' ')"
  done
  for l in $AB_LINES; do
    p=${l%%:*} f=${l#*:}
    echo "-- $p $f: working tree, then $n"
    timeout 120 "$BUILD/$p" "$f" 2>&1 | grep -v '^bench_'
    timeout 120 "b_$n/$p" "$f" 2>&1 | grep -v '^bench_'
  done
  if [ -n "$AB_POST" ]; then
    echo "-- $n: $AB_POST"
    AB_BUILD=$PWD/b_$n sh -c "$AB_POST" 2>&1
  fi
done
