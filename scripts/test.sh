#!/usr/bin/env bash
# The tests: build, then the whole GoogleTest suite through CTest (GPU tests skip themselves without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
HISA_PYTHON=1 bash scripts/build.sh
cd "${HISA_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
