#!/usr/bin/env bash
# The CUDA backend's one device run: GPU tests (hisa_cuda_tests), benchmarks (hisa_cuda_bench),
# the in-run PyTorch baseline (bench/torch_baseline.py), the SASS summary, compute-sanitizer on
# small cases. Binaries are built elsewhere and carried in .carry-cuda/ (with libgomp.so.1;
# .carry/ holds other sessions' data), ignored through .git/info/exclude.
# Writes under $OUT: run.log, tests.log, tests.json, bench.json, smi.csv, stream_probe.json, torch.json, sass.txt,
# sass_prefill_fp8_h64.txt, ncu_*.{txt,csv,log} (Nsight Compute on one prefill launch), sanitizer.log. Each step has its own time limit so that a hang
# cannot eat the whole lease.
#
#   OUT=/tmp/out bash bench/device_run.sh            (run from the repository root)
#   STEPS="tests bench" bash bench/device_run.sh     (a subset)
#   STEPS=build bash bench/device_run.sh             (build the carried binaries, here)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hisa_device_out}
BIN=${HISA_BIN:-.carry-cuda}
STEPS=${STEPS:-"env tests bench probe torch sass ncu sanitizer"}  # also: ncu_decode
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$BIN:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
LOG=$OUT/run.log
step() { echo "=== $* ($(date -u +%T))" | tee -a "$LOG"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }

# Build if needed: the binaries come from build-cuda (CUDA on, sm_90a, static CUDA runtime) and are
# copied with libgomp into $BIN. Run `STEPS=build bash bench/device_run.sh` on the development machine
# before a device run (the device image lacks nlohmann-json and CLI11); on a machine that has them, a
# run that finds no binaries builds them itself.
if has build || [ ! -x "$BIN/hisa_cuda_tests" ] || [ ! -x "$BIN/hisa_cuda_bench" ]; then
  step "build: hisa_cuda_tests, hisa_cuda_bench"
  {
    cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DHISA_CUDA=ON -DHISA_PYTHON=OFF &&
      cmake --build build-cuda --target hisa_cuda_tests hisa_cuda_bench hisa_smem_probe hisa_stream_probe &&
      mkdir -p "$BIN" && cp build-cuda/hisa_cuda_tests build-cuda/hisa_cuda_bench build-cuda/hisa_smem_probe build-cuda/hisa_stream_probe "$BIN/" &&
      gomp=$(LD_LIBRARY_PATH= ldd build-cuda/hisa_cuda_tests | awk '/libgomp/ {print $3}') &&
      { [ -z "$gomp" ] || cp "$gomp" "$BIN/"; }
  } >"$OUT/build.log" 2>&1
  rc=$?
  tail -n 3 "$OUT/build.log" | tee -a "$LOG"
  if [ $rc -ne 0 ]; then
    echo "build failed (exit $rc): see build.log" | tee -a "$LOG"
    exit 1
  fi
  if [ "$STEPS" = "build" ]; then exit 0; fi
fi

if has env; then
  step environment
  {
    date -u
    uname -r
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total,power.limit \
      --format=csv
    python3 -c "import torch; print('torch', torch.__version__)"
  } 2>&1 | tee -a "$LOG"
fi

if has tests; then
  step "tests: hisa_cuda_tests"
  timeout "${TEST_TIMEOUT:-170}" "$BIN/hisa_cuda_tests" --gtest_output="json:$OUT/tests.json" \
    >"$OUT/tests.log" 2>&1
  echo "exit $?" >>"$OUT/tests.log"
  grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) +\]|^\[=+\]|Failure|row [0-9]+ \(e =|exit [0-9]+$" "$OUT/tests.log" |
    tail -n 60 | tee -a "$LOG"
fi

if has bench; then
  step "bench: hisa_cuda_bench"
  # SM clock, power and clock-event reasons every 100 ms while it runs (smi.csv; the bench prints
  # UTC times on its decode lines to line them up).
  smi_pid=
  if command -v nvidia-smi >/dev/null; then
    reasons=clocks_event_reasons.active
    nvidia-smi --query-gpu=$reasons --format=csv >/dev/null 2>&1 || reasons=clocks_throttle_reasons.active
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,$reasons \
      --format=csv -lms 100 >"$OUT/smi.csv" 2>&1 &
    smi_pid=$!
  fi
  # BENCH_ARGS: extra arguments (e.g. --no-prefill for a decode-only run)
  timeout "${BENCH_TIMEOUT:-150}" "$BIN/hisa_cuda_bench" --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 |
    tee -a "$LOG"
  if [ -n "$smi_pid" ]; then kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null; fi
fi

if has probe && [ -x "$BIN/hisa_stream_probe" ]; then
  step "probe: hisa_stream_probe (decode key-stream load paths)"
  timeout "${PROBE_TIMEOUT:-60}" "$BIN/hisa_stream_probe" --json "$OUT/stream_probe.json" 2>&1 |
    tee -a "$LOG"
fi

if has torch; then
  step "bench: torch_baseline.py"
  timeout "${TORCH_TIMEOUT:-110}" python3 bench/torch_baseline.py --json "$OUT/torch.json" 2>&1 |
    tail -n 30 | tee -a "$LOG"
fi

if has sass; then
  step "sass: tensor-core instructions per kernel"
  if command -v cuobjdump >/dev/null; then
    cuobjdump --dump-sass "$BIN/hisa_cuda_tests" >/tmp/hisa_sass.txt 2>&1
    awk '/Function :/ {f=$3} /QGMMA|HGMMA|HMMA|LDL|STL|WARPGROUP.DEPBAR|WARPSYNC/ {
           split($0, a, /[ ;]+/); for (i in a) if (a[i] ~ /^(QGMMA|HGMMA|HMMA|LDL|STL|WARPGROUP)/) n[f " " a[i]]++ }
         END { for (x in n) print n[x], x }' /tmp/hisa_sass.txt | sort -k2 >"$OUT/sass.txt"
    grep -c "" "$OUT/sass.txt" | sed 's/^/sass lines: /' | tee -a "$LOG"
    grep -E "sm90_flat_topk" "$OUT/sass.txt" | grep -E "GMMA" | head -n 20 | tee -a "$LOG"
    # Full SASS of the benchmarked prefill instance (fp8, H = 64, top-k mode), for reading.
    awk '/Function :/ {on = ($3 ~ /FlatConfigINS1_3Fp8ELi64ELi2ELb0ELb0ELb0ELi0ELi0E/)} on' /tmp/hisa_sass.txt \
      >"$OUT/sass_prefill_fp8_h64.txt"
    wc -l "$OUT/sass_prefill_fp8_h64.txt" | tee -a "$LOG"
    # Spill loads and stores (LDL/STL) of the production prefill (setmaxnreg split since run 56).
    grep -c -E "LDL|STL" "$OUT/sass_prefill_fp8_h64.txt" | sed 's/^/prefill LDL+STL: /' | tee -a "$LOG"
  else
    echo "no cuobjdump" | tee -a "$LOG"
  fi
fi

# One launch of the benchmark under Nsight Compute (--set full): warp states, scheduler, pipes,
# memory, stall samples per CUDA source line and per SASS instruction. Files $OUT/PREFIX_*.
#   ncu_one PREFIX KERNEL_REGEX SUMMARY_GREP BENCH_ARGS...
ncu_one() {
  local pre=$1 regex=$2 summary=$3
  shift 3
  if ! command -v ncu >/dev/null; then
    echo "no ncu" | tee -a "$LOG"
    return
  fi
  timeout "${NCU_TIMEOUT:-150}" ncu --kernel-name-base mangled --kernel-name regex:"$regex" \
    --launch-skip 2 --launch-count 1 --set full --import-source no --export "/tmp/hisa_$pre" \
    --force-overwrite "$BIN/hisa_cuda_bench" "$@" >"$OUT/${pre}_run.log" 2>&1
  echo "exit $?" >>"$OUT/${pre}_run.log"
  tail -n 5 "$OUT/${pre}_run.log" | tee -a "$LOG"
  local rep="/tmp/hisa_$pre.ncu-rep"
  [ -f "$rep" ] || return
  ncu --import "$rep" --page details --print-details all >"$OUT/${pre}_details.txt" 2>&1
  ncu --import "$rep" --page source --csv --print-source cuda >"$OUT/${pre}_source_cuda.csv" 2>&1
  ncu --import "$rep" --page source --csv --print-source sass >"$OUT/${pre}_source_sass.csv" 2>&1
  grep -E "$summary" "$OUT/${pre}_details.txt" | head -n 12 | tee -a "$LOG"
  ls -la "$OUT/${pre}"_* | tee -a "$LOG"
}

if has ncu; then
  # One production prefill launch (fp8, H = 64, top-k mode) at 32K.
  step "ncu: prefill fp8 H=64 L=32768, one launch"
  ncu_one ncu 'FlatConfigINS1_3Fp8ELi64ELi2ELb0ELb0ELb0ELi0ELi0E' \
    "Duration|Issue Slots Busy|No Eligible|Active Warps Per Scheduler|Eligible Warps|Warp Cycles Per Issued" \
    --prefill-sizes 32768 --no-decode
fi

if has ncu_decode; then
  # One production decode launch (fp8, H = 64, next_n 1, batch 64 at 128K).
  step "ncu: decode fp8 H=64 b64 x 128K, one launch"
  ncu_one ncu_decode 'FlatConfigINS1_3Fp8ELi64ELi1ELb1ELb0ELb0ELi0ELi0E' \
    "Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|No Eligible" \
    --no-prefill --decode-case 64x131072
fi

if has sanitizer; then
  step "compute-sanitizer memcheck (small cases)"
  timeout "${SAN_TIMEOUT:-100}" compute-sanitizer --tool memcheck --print-limit 20 \
    "$BIN/hisa_cuda_tests" \
    --gtest_filter='CudaPrefill.RandomFp8H64Fused:CudaPrefill.RandomBf16H32Fused:CudaDecode.ExactAndSimt:CudaDecode.LongSplitsAndReruns:CudaTopk.*' \
    >"$OUT/sanitizer.log" 2>&1
  echo "exit $?" >>"$OUT/sanitizer.log"
  grep -E "ERROR SUMMARY|^\[ +(OK|FAILED|PASSED) +\]|exit [0-9]+$" "$OUT/sanitizer.log" | tail -n 12 | tee -a "$LOG"
fi

step "summary"
python3 - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(out, n)))
    except Exception as e:
        return None
t = load("tests.json")
if t:
    print(f"tests: {t['tests']} run, {t['failures']} failed, {t.get('disabled', 0)} disabled")
b = load("bench.json")
tb = load("torch.json")
torch_prefill = {r["L"]: r for r in (tb or {}).get("results", []) if r["kind"] == "prefill"}
torch_decode = {(r["batch"], r["context"]): r for r in (tb or {}).get("results", []) if r["kind"] == "decode"}
if b:
    print(f"device: {b['device']}, copy {b['copy_tbps_measured']:.2f} TB/s")
    print("prefill  L        ms      TFLOP/s  %fp8  xDG-logits  vs DG+topk  vs torch  checked")
    for r in b["results"]:
        if r["kind"] != "prefill":
            continue
        tp = torch_prefill.get(r["L"])
        print(f"         {r['L']:<7} {r['median_ms']:9.2f} {r['tflops']:8.1f} {100*r['fraction_of_fp8_gemm_ceiling']:5.1f}"
              f"  {r.get('ratio_to_deepgemm_logits', float('nan')):9.2f}  {r.get('speedup_vs_deepgemm_logits_topk', float('nan')):9.2f}x"
              f"  {tp['ms']/r['median_ms'] if tp else float('nan'):7.1f}x  {r.get('rows_checked',0)-r.get('rows_failed',0)}/{r.get('rows_checked',0)}")
    print("decode  b   ctx     splits   us      TB/s  %copy  xDG-logits  vs torch  checked  GPU us  rested GPU us")
    for r in b["results"]:
        if r["kind"] != "decode":
            continue
        tp = torch_decode.get((r["batch"], r["context"]))
        print(f"        {r['batch']:<3} {r['context']:<7} {r['splits']:<5} {r['median_us']:8.1f} {r['tbps']:6.2f} {100*r['fraction_of_copy_ceiling']:5.1f}"
              f"  {r.get('ratio_to_deepgemm_logits', float('nan')):9.2f}  {tp['us']/r['median_us'] if tp else float('nan'):7.1f}x"
              f"  {str(r.get('rows_checked','-') if 'rows_checked' not in r else (r['rows_checked']-r['rows_failed']))+'/'+str(r.get('rows_checked','-'))}"
              f"  {r.get('gpu_us', float('nan')):8.1f}  {r.get('rested_gpu_us', float('nan')):8.1f}")
if tb:
    print(f"torch: fp8 GEMM {tb['fp8_gemm_tflops']:.0f} TFLOP/s, copy {tb['copy_tbps']:.2f} TB/s")
EOF
