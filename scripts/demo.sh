#!/usr/bin/env bash
# The main job: build the `hisa` command, then run `hisa demo` (on the GPU when one is present, else on
# the CPU). Only the command is built (no tests or probes). Without a GPU it is built without the
# CUDA backend, in its own folder (build-demo): about 25 files, under a minute on 2 cores, instead
# of the CUDA compile. Steps and the build's progress go to stderr, the demo's report to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "==> $*" >&2; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  step "GPU present ($(nvidia-smi -L 2>/dev/null | head -n 1)): building the command with the CUDA backend"
  export HISA_BUILD_DIR=${HISA_BUILD_DIR:-build} HISA_CUDA=AUTO HISA_TESTS=ON
else
  step "no GPU (nvidia-smi absent or lists none): building the command with the CPU backends only"
  export HISA_BUILD_DIR=${HISA_BUILD_DIR:-build-demo}
  export HISA_CUDA=OFF HISA_TESTS=OFF
fi
HISA_TARGETS=hisa_cli bash scripts/build.sh
step "running: $HISA_BUILD_DIR/hisa demo $*"
exec "$HISA_BUILD_DIR/hisa" demo "$@"
