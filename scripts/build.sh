#!/usr/bin/env bash
# Configures and builds hisa into ${HISA_BUILD_DIR:-build}. CUDA is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${HISA_BUILD_DIR:-build}
args=(-DCMAKE_BUILD_TYPE=Release)
# Python bindings against Debian's python3 (which has numpy from Debian's packages).
[ "${HISA_PYTHON:-0}" = 1 ] && args+=(-DHISA_PYTHON=ON -DPython3_EXECUTABLE=/usr/bin/python3)
cmake -S . -B "$BUILD" -G Ninja "${args[@]}" ${HISA_CMAKE_ARGS:-} >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep -E "hisa: CUDA" "$BUILD.configure.log" || true
cmake --build "$BUILD" -j "$(nproc)"
