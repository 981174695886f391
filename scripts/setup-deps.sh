#!/bin/sh
# Installs what `make` and `make test` need on a fresh Debian machine and is
# quiet (and quick) when everything is already there: a C compiler, a C++
# compiler (kiln compiles kernels with it at run time), CMake, and python3
# with numpy (the CLI tests build and check .npy files with it).
set -eu

missing=""
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v python3 >/dev/null 2>&1 || missing="$missing python3 python3-pip"

if [ -n "$missing" ]; then
  echo "setup-deps: installing$missing"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if ! python3 -c 'import numpy' >/dev/null 2>&1; then
  echo "setup-deps: installing numpy"
  python3 -m pip install -q numpy 2>/dev/null ||
    python3 -m pip install -q --break-system-packages numpy 2>/dev/null ||
    { [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-numpy >/dev/null; } ||
    echo "setup-deps: could not install numpy; the CLI tests that need it will be skipped"
fi
