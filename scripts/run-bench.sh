#!/bin/sh
# Runs every benchmark program built from bench/*.c; each prints its own
# baseline next to kiln's figure. Logs go to $BENCH_LOG_DIR if set.
set -eu
dir="$1"
for src in bench/*.c; do
  name=$(basename "$src" .c)
  echo "== $name"
  if [ -n "${BENCH_LOG_DIR:-}" ]; then
    "$dir/$name" | tee "$BENCH_LOG_DIR/$name.txt"
  else
    "$dir/$name"
  fi
done
