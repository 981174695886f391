#!/bin/sh
# On the GPU machine: where one kernel's cycles go, instruction by
# instruction (Nsight Compute's warp-state samples at the finest interval),
# for a `kiln linalg` call. Builds build-gpu first (as gpu-check.sh does).
# Usage: OUT=/tmp/o sh scripts/gpu-source.sh KERNEL_REGEX COUNT OP SHAPE [opts]
#   e.g. sh scripts/gpu-source.sh cq_chol 3 qr 100000x64
# Writes $OUT/src-KERNEL.txt (the source page, SASS with per-instruction
# samples) and $OUT/det-KERNEL.txt (the details page).
set -u
OUT=${OUT:-/tmp/kiln-prof}
mkdir -p "$OUT"
kre=$1; count=$2; op=$3; shapes=$4; shift 4
JOBS=$(nproc 2>/dev/null || echo 8)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j "$JOBS" >>"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
export KILN_CACHE_DIR="$PWD/build-gpu/cache"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
work=$(mktemp -d)
files=$(python3 - "$work/in" "$shapes" <<'PY'
import sys, numpy as np
base, shapes = sys.argv[1], sys.argv[2].split(",")
rng = np.random.default_rng(7)
for i, s in enumerate(shapes):
    a = rng.standard_normal([int(d) for d in s.split("x")]).astype(np.float32)
    np.save(f"{base}_{i}.npy", a); print(f"{base}_{i}.npy")
PY
)
build-gpu/kiln linalg "$op" --device gpu --out-dir "$work" "$@" $files >/dev/null 2>&1
"$NCU" --clock-control none -k "regex:$kre" -c "$count" --set full \
  --section SourceCounters --warp-sampling-interval 0 --import-source no \
  -o "$work/rep" -f \
  build-gpu/kiln linalg "$op" --device gpu --out-dir "$work" "$@" $files \
  >"$OUT/ncu-$kre.log" 2>&1
"$NCU" -i "$work/rep.ncu-rep" --page details >"$OUT/det-$kre.txt" 2>&1
"$NCU" -i "$work/rep.ncu-rep" --page source --print-source sass --csv \
  >"$OUT/src-$kre.csv" 2>&1
grep -E 'Duration|Registers|Achieved Occ|Warp Cycles Per Issued' "$OUT/det-$kre.txt" | head -30
rm -rf "$work"
