#!/bin/sh
# On the development machine, before a GPU call that A/Bs candidates: each
# REV (a branch or commit) is exported into the folder ab_<name>/ at the
# repository root (name: REV with '/' as '-'), which travels to the GPU
# machine with the working tree (untracked); scripts/gpu-ab.sh builds and
# runs them there. Remove them afterwards: sh scripts/ab-prepare.sh --clean
# Usage: sh scripts/ab-prepare.sh REV [REV...]
set -eu
cd "$(git rev-parse --show-toplevel)"
if [ "${1:-}" = "--clean" ]; then
  rm -rf ab_*/
  exit 0
fi
[ $# -ge 1 ] || { echo "usage: sh scripts/ab-prepare.sh REV [REV...]" >&2; exit 2; }
for rev in "$@"; do
  dir="ab_$(echo "$rev" | tr '/' '-')"
  rm -rf "$dir"
  mkdir "$dir"
  git archive "$rev" | tar -x -C "$dir"
  echo "$dir <- $(git rev-parse --short "$rev") ($rev)"
done
