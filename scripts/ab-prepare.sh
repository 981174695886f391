#!/bin/sh
# On the development machine, before a GPU call that A/Bs candidates: each
# REV (a branch or commit) is exported into the folder ab_<name>/ at the
# repository root (name: REV with '/' as '-'); a patch file (.mbox or
# .patch, e.g. dev/candidates/x.mbox: `git format-patch --stdout`) gives
# HEAD with that patch applied, in ab_<file name>/. The folder travels to the GPU
# machine with the working tree (untracked); scripts/gpu-ab.sh builds and
# runs them there. AB_TESTS and AB_LINES set here (see gpu-ab.sh) are kept
# in ab_<name>/.ab and apply to those candidates only, so that each runs
# just the tests and bench lines of its area:
#   AB_TESTS=linalg_lu AB_LINES="bench_solve:LU" sh scripts/ab-prepare.sh wip/x
# Remove them afterwards: sh scripts/ab-prepare.sh --clean
# Usage: sh scripts/ab-prepare.sh REV [REV...]
set -eu
cd "$(git rev-parse --show-toplevel)"
if [ "${1:-}" = "--clean" ]; then
  rm -rf ab_*/
  exit 0
fi
[ $# -ge 1 ] || { echo "usage: sh scripts/ab-prepare.sh REV [REV...]" >&2; exit 2; }
for rev in "$@"; do
  case "$rev" in
  *.mbox | *.patch)
    name=$(basename "$rev")
    dir="ab_${name%.*}"
    rm -rf "$dir"
    mkdir "$dir"
    git archive HEAD | tar -x -C "$dir"
    # (from the top, with --directory: git apply run inside the folder
    # would skip every path silently)
    git apply --directory="$dir" "$rev"
    echo "$dir <- HEAD + $rev"
    ;;
  *)
    dir="ab_$(echo "$rev" | tr '/' '-')"
    rm -rf "$dir"
    mkdir "$dir"
    git archive "$rev" | tar -x -C "$dir"
    echo "$dir <- $(git rev-parse --short "$rev") ($rev)"
    ;;
  esac
  if [ -n "${AB_TESTS:-}${AB_LINES:-}" ]; then
    printf "AB_TESTS='%s'\nAB_LINES='%s'\n" "${AB_TESTS:-}" "${AB_LINES:-}" \
      >"$dir/.ab"
  fi
done
