#!/usr/bin/env bash
# The main job: build, then `hisa demo` (on the GPU when one is present, else on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
exec "${HISA_BUILD_DIR:-build}/hisa" demo "$@"
