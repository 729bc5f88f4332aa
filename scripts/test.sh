#!/usr/bin/env bash
# The tests: build everything (the CUDA backend and its tests too when nvcc is found, so that CI
# compiles them), then the whole GoogleTest suite through CTest (GPU tests are listed as skipped
# without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
HISA_PYTHON=1 bash scripts/build.sh
cd "${HISA_BUILD_DIR:-build}"
echo "==> running the tests: ctest in $PWD" >&2
ctest --output-on-failure -j "$(nproc)" "$@"
