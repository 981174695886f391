#!/bin/sh
# On the GPU machine: where a linalg call's GPU time goes, kernel by kernel.
# Builds build-gpu (as gpu-check.sh does), makes random inputs with numpy,
# and runs `kiln linalg ...` under Nsight Compute with one metric (each
# kernel's GPU duration; --clock-control none leaves the clocks alone).
# Launch gaps are not in these figures: their sum is the GPU's busy time.
# Per case, $OUT/prof-NAME.csv (every launch, in order) and a summary by
# kernel name on stdout.
# Usage: OUT=/tmp/o sh scripts/gpu-profile.sh "NAME OP SHAPE[,SHAPE] [opts]" ...
# (a NAME ending in spd gets a symmetric positive definite first input)
#   e.g. "lu8192 lu 8192x8192" "qr1e5 qr 100000x64 --mode reduced"
#        "solve8192 solve 8192x8192,8192x16"
set -u
OUT=${OUT:-/tmp/kiln-prof}
mkdir -p "$OUT"
JOBS=$(nproc 2>/dev/null || echo 8)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j "$JOBS" >>"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
export KILN_CACHE_DIR="$PWD/build-gpu/cache"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "gpu-profile: no ncu on this machine"; exit 1; }
work=$(mktemp -d)
for spec in "$@"; do
  set -- $spec
  name=$1; op=$2; shapes=$3; shift 3
  kind=; case $name in *spd) kind=spd ;; esac
  files=$(python3 scripts/make-inputs.py "$work/$name" "$shapes" $kind)
  mkdir -p "$work/out-$name"
  # Once without the profiler: compiles and fills the disk cache.
  build-gpu/kiln linalg "$op" --device gpu --out-dir "$work/out-$name" "$@" $files >/dev/null 2>&1
  "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    --page raw --print-units base \
    build-gpu/kiln linalg "$op" --device gpu --out-dir "$work/out-$name" "$@" $files \
    >"$OUT/prof-$name.csv" 2>"$OUT/prof-$name.err"
  echo "== $name: kiln linalg $op $shapes $*"
  python3 - "$OUT/prof-$name.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    print("  no kernels profiled (see the .err file)"); sys.exit()
h = rows[hdr]; k = h.index("Kernel Name"); t = h.index("gpu__time_duration.sum")
tot = collections.OrderedDict(); n = collections.Counter(); allt = 0.0
for r in rows[hdr + 1:]:
    try: us = float(r[t].replace(",", "")) / 1e3
    except (ValueError, IndexError): continue
    name = r[k].split("(")[0]
    tot[name] = tot.get(name, 0.0) + us; n[name] += 1; allt += us
print(f"  {sum(n.values())} launches, {allt/1e3:.3f} ms of kernel time")
for name, us in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {name:32s} {n[name]:6d} x  {us/1e3:9.3f} ms  ({us/n[name]:8.1f} us each, {100*us/allt:5.1f}%)")
PY
done
rm -rf "$work"
