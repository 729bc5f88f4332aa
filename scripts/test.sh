#!/usr/bin/env bash
# The tests: build everything (the CUDA backend and its tests too when nvcc is found, so that CI
# compiles them, and the Python package against Debian's python3), then the whole GoogleTest suite
# through CTest (GPU tests are listed as skipped without a GPU), then the Python package's pytest
# suite (python/tests; its PyTorch tests skip where torch or a GPU is missing) with Debian's
# python3, or the interpreter named by HISA_PYTHON_EXE.
set -euo pipefail
cd "$(dirname "$0")/.."
HISA_PYTHON=1 bash scripts/build.sh
BUILD=${HISA_BUILD_DIR:-build}
echo "==> running the tests: ctest in $BUILD" >&2
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" "$@")
echo "==> running the Python tests: pytest python/tests (package from $BUILD/python)" >&2
HISA_PYTHONPATH="$PWD/$BUILD/python" OMP_WAIT_POLICY=passive \
  "${HISA_PYTHON_EXE:-/usr/bin/python3}" -m pytest -q -p no:cacheprovider python/tests
