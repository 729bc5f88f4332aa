#!/usr/bin/env bash
# Configures and builds hisa into ${HISA_BUILD_DIR:-build}. CUDA is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${HISA_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${HISA_CMAKE_ARGS:-} >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep -E "hisa: CUDA" "$BUILD.configure.log" || true
cmake --build "$BUILD" -j "$(nproc)"
