#!/usr/bin/env bash
# Copies what python/device_check.sh needs to build and test the package on a GPU machine that
# has no network and maybe no Debian packages: the header-only C++ dependencies with their CMake
# configs (pybind11, nlohmann_json) and Debian's pure-Python pytest with its dependencies, into
# .carry/deps (git-ignored). Carry that folder with the working tree to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
HISA_PYTHON=1 bash scripts/deps.sh
DEST=.carry/deps
rm -rf "$DEST"
mkdir -p "$DEST/include" "$DEST/lib/cmake" "$DEST/share/cmake" "$DEST/pylib"
cp -r /usr/include/pybind11 /usr/include/nlohmann "$DEST/include/"
cp -r /usr/lib/cmake/pybind11 "$DEST/lib/cmake/"
cp -r /usr/share/cmake/nlohmann_json "$DEST/share/cmake/"
site=/usr/lib/python3/dist-packages
for p in pytest _pytest py.py py pluggy iniconfig packaging attr attrs more_itertools exceptiongroup tomli; do
  [ -e "$site/$p" ] && cp -r "$site/$p" "$DEST/pylib/"
done
find "$DEST" -name __pycache__ -prune -exec rm -rf {} +
echo "staged $(du -sh "$DEST" | cut -f1) in $DEST" >&2
