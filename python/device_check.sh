#!/usr/bin/env bash
# On a GPU machine: builds the hisa package against this machine's Python, PyTorch and CUDA, then
# runs the pytest suite (the PyTorch CUDA tests included), the per-call overhead measurement and
# the indexer-replacement example. Needs no network: where the machine lacks pybind11,
# nlohmann_json or pytest, it uses the copies that python/stage_device_deps.sh put in .carry/deps
# (carry that folder along). Everything goes to the log ${OUT:-.}/python_device_check.log; the
# exit status is pytest's.
#   HISA_PYTHON_EXE   the interpreter with PyTorch (default: python3 on PATH)
#   HISA_BUILD_DIR    the build folder (default: build-device)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${HISA_PYTHON_EXE:-$(command -v python3)}
BUILD=${HISA_BUILD_DIR:-build-device}
LOG="${OUT:-.}/python_device_check.log"
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
step() { echo "==> $*"; }

step "machine"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
"$PY" - <<'PYEOF'
import sys
print("python", sys.version.split()[0], sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())
except ImportError as e:
    print("torch: not importable:", e)
PYEOF

deps="$PWD/.carry/deps"
prefix=()
[ -d "$deps" ] && prefix+=("$deps")
if pyb=$("$PY" -m pybind11 --cmakedir 2>/dev/null); then prefix=("$pyb" "${prefix[@]}"); fi
nvcc=${CUDACXX:-/usr/local/cuda/bin/nvcc}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
step "configuring $BUILD (python $PY, nvcc $nvcc, prefix ${prefix[*]:-none})"
cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DHISA_PYTHON=ON -DHISA_TESTS=OFF \
  -DHISA_CLI=OFF -DHISA_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc" "-DPython3_EXECUTABLE=$PY" \
  "-DCMAKE_PREFIX_PATH=$(IFS=';'; echo "${prefix[*]:-}")" || exit 1
step "building _hisa (and hisa_cuda_bench, the C++ side of the overhead measurement)"
cmake --build "$BUILD" --target _hisa -j "$(nproc)" || exit 1
cmake --build "$BUILD" --target hisa_cuda_bench -j "$(nproc)" || echo "hisa_cuda_bench: not built"

export HISA_PYTHONPATH="$PWD/$BUILD/python"
if ! "$PY" -c "import pytest" 2>/dev/null; then
  [ -d "$deps/pylib" ] || { echo "pytest is missing and .carry/deps/pylib was not carried"; exit 1; }
  export PYTHONPATH="$deps/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi
# Where a crash starts: each probe in its own interpreter (the module alone on NumPy, then with
# PyTorch imported, then torch CPU and CUDA tensors), with what the module links against.
step "probes"
ldd "$HISA_PYTHONPATH"/hisa/_hisa*.so 2>/dev/null | grep -E "stdc|gomp|omp|cuda|gcc_s" || true
probe() {
  PYTHONPATH="$HISA_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}" "$PY" -X faulthandler -c "$2" >/dev/null 2>&1
  echo "probe $1: exit $?"
}
P0="import numpy as np, hisa; q = np.ones((4, 2, 64), np.float32); k = np.ones((300, 64), np.float32); w = np.ones((4, 2), np.float32)"
probe "numpy cpu" "$P0; hisa.select_prefill(q, k, w, method='hisa', block_size=64, top_blocks=4, topk=10)"
probe "torch imported first" "import torch; $P0; hisa.select_prefill(q, k, w, method='hisa', block_size=64, top_blocks=4, topk=10)"
probe "torch cpu tensors" "$P0; import torch; hisa.select_prefill(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(w), method='hisa', block_size=64, top_blocks=4, topk=10)"
probe "torch threads then hisa" "import torch; torch.ones(512, 512) @ torch.ones(512, 512); $P0; hisa.select_prefill(q, k, w, method='flat', topk=10)"
probe "torch cuda tensors" "$P0; import torch; t = lambda a: torch.from_numpy(a).cuda(); hisa.select_prefill(t(q), t(k), t(w), cu_seqlens_q=t(np.array([0, 4], np.int32)), cu_seqlens_k=t(np.array([0, 300], np.int32)), method='flat', topk=10); torch.cuda.synchronize()"

# One pytest per file, so that a crash in one (the interpreter's faulthandler prints where) does
# not hide the others' results.
status=0
for t in python/tests/test_*.py; do
  step "pytest $t"
  "$PY" -X faulthandler -m pytest -v -rs -p no:cacheprovider "$t"
  rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=$rc
done
step "per-call overhead (python/bench_overhead.py against the C++ call, hisa_cuda_bench)"
cpp=()
if [ -x "$BUILD/hisa_cuda_bench" ]; then
  "$BUILD/hisa_cuda_bench" --methods flat --prefill none --decode 1x8192 --no-ceilings \
    --json "${OUT:-.}/overhead_cpp.json" >/dev/null 2>&1 && cpp=(--cpp-json "${OUT:-.}/overhead_cpp.json")
fi
PYTHONPATH="$HISA_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}" "$PY" python/bench_overhead.py "${cpp[@]}" ||
  echo "bench_overhead failed"
step "indexer replacement example (python/examples/replace_indexer.py)"
PYTHONPATH="$HISA_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}" "$PY" python/examples/replace_indexer.py || echo "replace_indexer failed"
step "pytest exit status $status"
exit $status
