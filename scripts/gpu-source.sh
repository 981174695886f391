#!/bin/sh
# On the GPU machine: where kernels' cycles go, instruction by instruction
# and by warp state (Nsight Compute's warp-state samples at the finest
# interval), for `kiln linalg` calls. Builds build-gpu first (as
# gpu-check.sh does). Each spec profiles the first COUNT launches of the
# kernels matching KERNEL_REGEX in one call:
# Usage: OUT=/tmp/o sh scripts/gpu-source.sh "NAME KERNEL_REGEX COUNT OP SHAPE[,SHAPE] [opts]" ...
#   e.g. sh scripts/gpu-source.sh "chol cq_chol 3 qr 100000x64"
#        "cholspd chol_panel 2 cholesky 8192x8192" (NAME ending in spd:
#        a symmetric positive definite input)
# Writes $OUT/det-NAME.txt (the details page: stall reasons, launch
# statistics) and $OUT/src-NAME.csv (the source page: SASS with its
# samples), and prints each kernel's duration and top stall reasons.
set -u
OUT=${OUT:-/tmp/kiln-prof}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j "$JOBS" --target kiln_cli >>"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
export KILN_CACHE_DIR="$PWD/build-gpu/cache"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
work=$(mktemp -d)
for spec in "$@"; do
  set -- $spec
  name=$1; kre=$2; count=$3; op=$4; shapes=$5; shift 5
  kind=; case $name in *spd) kind=spd ;; esac
  files=$(python3 scripts/make-inputs.py "$work/$name" "$shapes" $kind)
  build-gpu/kiln linalg "$op" --device gpu --out-dir "$work" "$@" $files >/dev/null 2>&1
  "$NCU" --clock-control none -k "regex:$kre" -c "$count" \
    --section WarpStateStats --section SourceCounters --section LaunchStats \
    --section SpeedOfLight --section InstructionStats \
    --warp-sampling-interval 0 --import-source no -o "$work/rep-$name" -f \
    build-gpu/kiln linalg "$op" --device gpu --out-dir "$work" "$@" $files \
    >"$OUT/ncu-$name.log" 2>&1
  "$NCU" -i "$work/rep-$name.ncu-rep" --page details >"$OUT/det-$name.txt" 2>&1
  "$NCU" -i "$work/rep-$name.ncu-rep" --page source --print-source sass --csv \
    >"$OUT/src-$name.csv" 2>&1
  echo "== $name: $kre x $count in kiln linalg $op $shapes $*"
  tail -3 "$OUT/ncu-$name.log"
  grep -E '^  [a-z_]+.*\(|Duration|Stall|Warp Cycles Per Issued|Registers Per' "$OUT/det-$name.txt" | head -40
  rm -f "$work"/*.npy
done
rm -rf "$work"
