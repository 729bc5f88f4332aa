#!/usr/bin/env bash
# Configures and builds hisa into ${HISA_BUILD_DIR:-build}: everything (the library with CUDA when
# nvcc is found, the command, the tests), or only ${HISA_TARGETS} (space separated).
# HISA_CUDA (AUTO | ON | OFF) and HISA_TESTS (ON | OFF) set those options, extra CMake arguments go
# in HISA_CMAKE_ARGS. Each step is announced as it starts, and the build shows ninja's [n/N] count;
# all of it on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "==> $*" >&2; }

step "dependencies (Debian packages)"
bash scripts/deps.sh

BUILD=${HISA_BUILD_DIR:-build}
# Always passed: the cache of an existing build folder may hold another choice (a demo build
# without tests or CUDA, say).
args=(-DCMAKE_BUILD_TYPE=Release "-DHISA_CUDA=${HISA_CUDA:-AUTO}" "-DHISA_TESTS=${HISA_TESTS:-ON}")
# Python bindings against Debian's python3 (which has numpy from Debian's packages), or the
# interpreter named by HISA_PYTHON_EXE (one with PyTorch, say).
[ "${HISA_PYTHON:-0}" = 1 ] && args+=(-DHISA_PYTHON=ON "-DPython3_EXECUTABLE=${HISA_PYTHON_EXE:-/usr/bin/python3}")
# shellcheck disable=SC2206  # word splitting intended: a list of -D arguments
args+=(${HISA_CMAKE_ARGS:-})
step "configuring $BUILD: cmake ${args[*]}"
mkdir -p "$BUILD"
log="$BUILD/configure.log"
cmake -S . -B "$BUILD" -G Ninja "${args[@]}" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
grep -E "hisa: CUDA" "$log" >&2 || true

targets=()
# shellcheck disable=SC2206
[ -n "${HISA_TARGETS:-}" ] && targets=(--target ${HISA_TARGETS})
step "building ${HISA_TARGETS:-everything} in $BUILD ($(nproc) jobs)"
cmake --build "$BUILD" -j "$(nproc)" "${targets[@]}" >&2
