#!/usr/bin/env bash
# The CUDA backend's device run: one script, its steps chosen by STEPS, each under its own time
# limit, everything written under $OUT (run.log, the steps' logs and JSON files). Binaries are built
# on the development machine and carried in .carry-cuda/ (new) and .carry-old/ (the A/B's old build).
#
#   STEPS=build bash bench/device_run.sh                        # dev machine: .carry-cuda/
#   OLD_REV=<commit> STEPS=build_old bash bench/device_run.sh   # dev machine: .carry-old/
#   EXP_REVERT="<commit> ..." STEPS=build_exp bash bench/device_run.sh  # dev machine: .carry-x/
#   OUT=/tmp/out bash bench/device_run.sh                       # device, from the repository root
#   STEPS="deepgemm torch bench summary" BENCH_ARGS="--ragged --sweep" bash bench/device_run.sh
#
# Steps, in this order (default: env deepgemm torch bench tests sanitizer sass summary):
#   build      build-cuda/ -> $BIN: hisa_cuda_bench, hisa_cuda_tests, libgomp, COMMIT
#   build_old  OLD_REV's tree with this bench/cuda_bench.cu and src/cuda/device_buffer.hpp
#              copied in -> $OLD_BIN/hisa_cuda_bench (and COMMIT)
#   build_exp  this tree with EXP_REVERT's commits reverted (an experiment kept in history as a
#              commit and its revert comes back by reverting the revert) -> $EXP_BIN/hisa_cuda_bench
#   env        date, kernel, GPU, clocks, driver, torch
#   deepgemm   DeepGEMM 2.6.1 built from SHARED/baselines (README there), then dg_anchor.py ->
#              deepgemm.json (DG_PREFILL, DG_DECODE: its --prefill / --decode lists)
#   torch      bench/torch_baseline.py -> torch.json (TORCH_ARGS)
#   bench      hisa_cuda_bench -> bench.json, ratios against deepgemm.json and torch.json
#              (BENCH_ARGS); smi.csv samples clocks and power meanwhile
#   ab         $OLD_BIN and $BIN benches in turn, old/new AB_ROUNDS times with AB_ARGS ->
#              ${AB_NAME}_{old,new}_N.json, $AB_NAME.json (per-case medians, new/old; AB_NAME: ab)
#   tests      hisa_cuda_tests -> tests.json (gtest), tests.log (TEST_FILTER)
#   sanitizer  compute-sanitizer memcheck on SAN_FILTER's tests -> sanitizer.log
#   sass       per kernel of $BIN/hisa_cuda_bench: registers, stack, spill loads and stores
#              (LDL/STL), GMMA instructions -> sass.txt
#   ncu        Nsight Compute of one launch (NCU_ARGS, of the bench run with NCU_BENCH) -> ncu_*
#   times      Nsight Compute's duration of every kernel, one bench run per TIMES_CASES entry
#              (bench arguments, ';'-separated) -> times.txt (bench/kernel_times.py)
#   python     python/device_check.sh (the package built here, pytest with PyTorch CUDA tensors,
#              the per-call overhead against the C++ call, the indexer-replacement example)
#   needle     model/study.py needle NEEDLE_ARGS (default --tiny --budget 100 --idx-seconds 20: the
#              plumbing) through the package the python step built; inputs from .carry/data
#              (model/stage.sh run1)
#   summary    the key numbers of every JSON under $OUT
# Time limits (s): DG_BUILD_TIMEOUT 240, DG_TIMEOUT 240, TORCH_TIMEOUT 150, BENCH_TIMEOUT 300,
# AB_TIMEOUT 150 (each run), TEST_TIMEOUT 240, SAN_TIMEOUT 150, NCU_TIMEOUT 200, TIMES_TIMEOUT 60
# (each case), PY_TIMEOUT 240, NEEDLE_TIMEOUT 120.
# SHARED: the shared/ folder beside the repository (./shared, else ../shared); HISA_BIN, OLD_BIN:
# the binary folders; COMMIT: recorded in bench.json (default: $BIN/COMMIT from the build).
# Transfer limits of the device machine (64 MiB of carried files, a few files back): the build
# steps store the binaries xz-compressed (the device steps unpack them), and the device steps
# write into $OUT/work and pack it into $OUT/results.tgz after every step (PACK=0: write $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/hisa_device_out}
BIN=${HISA_BIN:-.carry-cuda}
OLD_BIN=${OLD_BIN:-.carry-old}
EXP_BIN=${EXP_BIN:-.carry-x}
AB_NAME=${AB_NAME:-ab}
STEPS=${STEPS:-"env deepgemm torch bench tests sanitizer sass summary"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
LOG=$OUT/run.log
T0=$(date +%s)
step() { echo "=== $* ($(date -u +%T), +$(($(date +%s) - T0)) s)" | tee -a "$LOG"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }
# The binaries of folder $1 run with its libgomp.
run_in() {
  local dir=$1
  shift
  LD_LIBRARY_PATH=$ROOT/$dir:${LD_LIBRARY_PATH:-} "$@"
}
# Keeps a carried binary folder out of git (it is built here, not committed).
ignore_dir() {
  [ -d .git ] || return 0
  git check-ignore -q "$1/x" || { mkdir -p .git/info && echo "/$1/" >>.git/info/exclude; }
}
# Copies the bench (and tests) of build folder $1 into $2 with libgomp; $3: the commit built.
carry() {
  local build=$1 dest=$2 commit=$3
  rm -rf "$dest" && mkdir -p "$dest" && cp "$build"/hisa_cuda_bench "$dest/" &&
    { [ ! -x "$build/hisa_cuda_tests" ] || cp "$build/hisa_cuda_tests" "$dest/"; } &&
    echo "$commit" >"$dest/COMMIT" && ignore_dir "$dest" || return 1
  local gomp
  gomp=$(LD_LIBRARY_PATH='' ldd "$build/hisa_cuda_tests" "$build/hisa_cuda_bench" 2>/dev/null |
    awk '/libgomp/ {print $3; exit}')
  [ -z "$gomp" ] || cp "$gomp" "$dest/"
  # (stripped and xz-compressed: about 1.4 MB a binary instead of 10-13 MB)
  for f in "$dest"/hisa_cuda_bench "$dest"/hisa_cuda_tests "$dest"/libgomp*; do
    [ -f "$f" ] || continue
    strip --strip-unneeded "$f" 2>/dev/null
    xz -T0 -6 -f "$f" || return 1
  done
}
# Unpacks the xz-compressed binaries of folder $1 (python's lzma: xz may be missing).
unpack() {
  local f
  for f in "$1"/*.xz; do
    [ -f "$f" ] || continue
    python3 -c "import lzma, os, sys; open(sys.argv[1][:-3], 'wb').write(lzma.open(sys.argv[1]).read()); os.chmod(sys.argv[1][:-3], 0o755)" "$f" &&
      rm -f "$f"
  done
}
# nvidia-smi samples (clocks, power, clock-event reasons) every 100 ms into $OUT/$1 until stop_smi.
SMI_PID=
start_smi() {
  command -v nvidia-smi >/dev/null || return 0
  local reasons=clocks_event_reasons.active
  nvidia-smi --query-gpu=$reasons --format=csv >/dev/null 2>&1 || reasons=clocks_throttle_reasons.active
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,$reasons \
    --format=csv -lms 100 >"$OUT/$1" 2>&1 &
  SMI_PID=$!
}
stop_smi() {
  [ -z "$SMI_PID" ] || { kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; }
  SMI_PID=
}

# ------------------------------------------------------------------ builds (development machine)
# The device image lacks nlohmann-json and CLI11: build here, carry $BIN. A run whose steps need
# binaries that are not there tries to build them itself.
needs_bin=0
for s in bench ab tests sanitizer sass ncu times; do has $s && needs_bin=1; done
if has build || { [ $needs_bin = 1 ] && [ ! -x "$BIN/hisa_cuda_bench" ] &&
  [ ! -f "$BIN/hisa_cuda_bench.xz" ]; }; then
  step "build: hisa_cuda_bench, hisa_cuda_tests -> $BIN"
  commit=$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo "-dirty")
  {
    cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DHISA_CUDA=ON -DHISA_PYTHON=OFF &&
      cmake --build build-cuda --target hisa_cuda_tests hisa_cuda_bench &&
      carry build-cuda "$BIN" "$commit"
  } >"$OUT/build.log" 2>&1
  rc=$?
  tail -n 3 "$OUT/build.log" | tee -a "$LOG"
  if [ $rc -ne 0 ]; then
    echo "build failed (exit $rc): see $OUT/build.log" | tee -a "$LOG"
    has build && exit 1
  fi
fi
if has build_old; then
  step "build_old: OLD_REV=${OLD_REV:-} with this bench -> $OLD_BIN"
  [ -n "${OLD_REV:-}" ] || { echo "build_old needs OLD_REV=<commit>" | tee -a "$LOG"; exit 1; }
  src=/tmp/hisa-old-src
  {
    rm -rf "$src" && mkdir -p "$src" && git archive "$OLD_REV" | tar -x -C "$src" &&
      cp bench/cuda_bench.cu "$src/bench/" && cp src/cuda/device_buffer.hpp "$src/src/cuda/" &&
      cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHISA_CUDA=ON \
        -DHISA_PYTHON=OFF -DHISA_TESTS=OFF -DCMAKE_CUDA_FLAGS=-DHISA_BENCH_OLD_LIBRARY &&
      cmake --build "$src/build" --target hisa_cuda_bench &&
      carry "$src/build" "$OLD_BIN" "$(git rev-parse "$OLD_REV") (bench/cuda_bench.cu of $(git rev-parse \
        HEAD)$(git diff --quiet HEAD -- bench/cuda_bench.cu || echo "-dirty"))"
  } >"$OUT/build_old.log" 2>&1
  rc=$?
  tail -n 3 "$OUT/build_old.log" | tee -a "$LOG"
  [ $rc -eq 0 ] || { echo "build_old failed (exit $rc): see $OUT/build_old.log" | tee -a "$LOG"; exit 1; }
fi
if has build_exp; then
  step "build_exp: this tree with ${EXP_REVERT:-} reverted -> $EXP_BIN"
  [ -n "${EXP_REVERT:-}" ] || { echo "build_exp needs EXP_REVERT=<commits>" | tee -a "$LOG"; exit 1; }
  src=/tmp/hisa-exp-src
  {
    rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -C "$src" &&
      for c in $EXP_REVERT; do git diff "$c" "$c^" | git -C "$src" apply || exit 1; done &&
      cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHISA_CUDA=ON \
        -DHISA_PYTHON=OFF -DHISA_TESTS=OFF &&
      cmake --build "$src/build" --target hisa_cuda_bench &&
      carry "$src/build" "$EXP_BIN" "$(git rev-parse HEAD) with $EXP_REVERT reverted"
  } >"$OUT/build_exp.log" 2>&1
  rc=$?
  tail -n 3 "$OUT/build_exp.log" | tee -a "$LOG"
  [ $rc -eq 0 ] || { echo "build_exp failed (exit $rc): see $OUT/build_exp.log" | tee -a "$LOG"; exit 1; }
fi
rest=${STEPS//build_old/}
rest=${rest//build_exp/}
rest=${rest//build/}
[ -n "${rest// /}" ] || exit 0
unpack "$BIN"
unpack "$OLD_BIN"
unpack "$EXP_BIN"
COMMIT=${COMMIT:-$(cat "$BIN/COMMIT" 2>/dev/null)}
PACKED=$OUT
if [ "${PACK:-1}" = 1 ]; then
  OUT=$PACKED/work
  mkdir -p "$OUT"
  # A second invocation in the same device call adds to the first's results.
  [ ! -f "$PACKED/results.tgz" ] || tar -xzf "$PACKED/results.tgz" -C "$OUT"
  mv "$LOG" "$OUT/" 2>/dev/null
  LOG=$OUT/run.log
fi
# $OUT into $PACKED/results.tgz (and run.log beside it), after every step.
pack() {
  [ "${PACK:-1}" = 1 ] || return 0
  tar -czf "$PACKED/results.tgz" -C "$OUT" . && cp "$LOG" "$PACKED/run.log"
}
step() {
  pack
  echo "=== $* ($(date -u +%T), +$(($(date +%s) - T0)) s)" | tee -a "$LOG"
}

# ------------------------------------------------------------------ device steps
if has env; then
  step environment
  {
    date -u
    uname -r
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,memory.total,power.limit \
      --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    echo "binaries: $BIN ($COMMIT); old: $OLD_BIN ($(cat "$OLD_BIN/COMMIT" 2>/dev/null || echo none))"
  } 2>&1 | tee -a "$LOG"
fi

if has deepgemm; then
  step "deepgemm: build DeepGEMM from shared/baselines, time it with dg_anchor.py"
  if [ -z "${SHARED:-}" ]; then
    if [ -d "$ROOT/shared/baselines" ]; then SHARED=$ROOT/shared
    elif [ -d "$ROOT/../shared/baselines" ]; then SHARED=$(cd "$ROOT/../shared" && pwd)
    fi
  fi
  DG=/tmp/w/DeepGEMM
  if [ -z "${SHARED:-}" ] || [ ! -f "$SHARED/baselines/dg_anchor.py" ]; then
    echo "no shared/baselines beside the repository (set SHARED): skipped" | tee -a "$LOG"
  else
    echo "SHARED=$SHARED" | tee -a "$LOG"
    # The build as SHARED/baselines/README.md gives it (about 60 s); kept while the machine is.
    if ! ls "$DG"/deep_gemm/_C*.so >/dev/null 2>&1; then
      (
        set -e
        mkdir -p /tmp/w && tar -xJf "$SHARED/baselines/deepgemm-src.tar.xz" -C /tmp/w
        cd "$DG"
        ln -sfn "$PWD/third-party/cutlass/include/cutlass" deep_gemm/include/cutlass
        ln -sfn "$PWD/third-party/cutlass/include/cute" deep_gemm/include/cute
        timeout "${DG_BUILD_TIMEOUT:-240}" python3 setup.py build_ext --inplace
      ) >"$OUT/deepgemm_build.log" 2>&1
      echo "build exit $?" | tee -a "$OUT/deepgemm_build.log" | tee -a "$LOG"
    fi
    # Without LD_PRELOAD of the system libstdc++, DeepGEMM's first JIT compile crashes.
    mkdir -p /tmp/home /tmp/dgcache
    HOME=/tmp/home DG_JIT_CACHE_DIR=/tmp/dgcache LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libstdc++.so.6 \
      timeout "${DG_TIMEOUT:-240}" python3 "$SHARED/baselines/dg_anchor.py" --dg "$DG" \
      --json "$OUT/deepgemm.json" ${DG_PREFILL:+--prefill "$DG_PREFILL"} \
      ${DG_DECODE:+--decode "$DG_DECODE"} 2>&1 | tee "$OUT/deepgemm.log" | tee -a "$LOG"
    echo "dg_anchor exit ${PIPESTATUS[0]}" | tee -a "$LOG"
  fi
fi

if has torch; then
  step "torch: bench/torch_baseline.py"
  timeout "${TORCH_TIMEOUT:-150}" python3 bench/torch_baseline.py --json "$OUT/torch.json" \
    ${TORCH_ARGS:-} 2>&1 | tee -a "$LOG"
  echo "torch_baseline exit ${PIPESTATUS[0]}" | tee -a "$LOG"
fi

if has bench; then
  step "bench: hisa_cuda_bench ${BENCH_ARGS:-}"
  start_smi smi.csv
  run_in "$BIN" timeout "${BENCH_TIMEOUT:-300}" "$BIN/hisa_cuda_bench" --json "$OUT/bench.json" \
    --deepgemm "$OUT/deepgemm.json" --torch "$OUT/torch.json" ${COMMIT:+--commit "$COMMIT"} \
    ${BENCH_ARGS:-} 2>&1 | tee -a "$LOG"
  echo "bench exit ${PIPESTATUS[0]}" | tee -a "$LOG"
  stop_smi
fi

if has ab; then
  AB_ARGS=${AB_ARGS:-"--methods flat --prefill 131072 --decode 64x131072"}
  step "ab: $OLD_BIN (old) and $BIN (new) in turn, ${AB_ROUNDS:-2} rounds: $AB_ARGS"
  if [ ! -x "$OLD_BIN/hisa_cuda_bench" ]; then
    echo "no $OLD_BIN/hisa_cuda_bench (OLD_REV=<commit> STEPS=build_old): skipped" | tee -a "$LOG"
  else
    start_smi "smi_$AB_NAME.csv"
    for n in $(seq 1 "${AB_ROUNDS:-2}"); do
      for side in old new; do
        dir=$BIN
        [ $side = old ] && dir=$OLD_BIN
        run_in "$dir" timeout "${AB_TIMEOUT:-150}" "$dir/hisa_cuda_bench" \
          --json "$OUT/${AB_NAME}_${side}_$n.json" $AB_ARGS >"$OUT/${AB_NAME}_${side}_$n.log" 2>&1
        echo "$AB_NAME $side $n: exit $? ($(date -u +%T))" | tee -a "$LOG"
      done
    done
    stop_smi
    python3 - "$OUT" "$AB_NAME" <<'EOF' 2>&1 | tee -a "$LOG"
# Per case (prefill: method, L; decode: method, batch, context, next_n) the median over the runs
# of each side, and new / old.
import glob, json, os, statistics, sys
out, tag = sys.argv[1], sys.argv[2]
metrics = {"prefill": ["median_ms"], "decode": ["rested_us", "sync_us", "back_to_back_us"]}
runs = {"old": {}, "new": {}}
for side in runs:
    for f in sorted(glob.glob(os.path.join(out, f"{tag}_{side}_*.json"))):
        try:
            rep = json.load(open(f))
        except Exception as e:
            print(f"{f}: {e}")
            continue
        for r in rep.get("results", []):
            if r.get("kind") not in metrics or "error" in r:
                continue
            key = (r["kind"], r["method"], r.get("L"), r.get("batch"), r.get("context"), r.get("next_n"))
            for m in metrics[r["kind"]]:
                runs[side].setdefault((key, m), []).append(r[m])
summary = []
print("case                                  metric           old median (runs)  new median (runs)  new/old")
for (key, m), old in sorted(runs["old"].items(), key=str):
    new = runs["new"].get((key, m))
    if not new:
        continue
    o, n = statistics.median(old), statistics.median(new)
    kind, method, L, b, ctx, nn = key
    name = f"{kind} {method} L={L}" if kind == "prefill" else f"{kind} {method} b={b} ctx={ctx} n={nn}"
    fmt = lambda v: ",".join(f"{x:.4g}" for x in v)
    print(f"{name:<37} {m:<16} {o:9.4g} ({fmt(old)})  {n:9.4g} ({fmt(new)})  {n / o:.4f}")
    summary.append({"case": name, "metric": m, "old": old, "new": new, "old_median": o,
                    "new_median": n, "new_over_old": n / o})
json.dump({"cases": summary}, open(os.path.join(out, f"{tag}.json"), "w"), indent=1)
EOF
  fi
fi

if has tests; then
  step "tests: hisa_cuda_tests ${TEST_FILTER:+--gtest_filter=$TEST_FILTER}"
  run_in "$BIN" timeout "${TEST_TIMEOUT:-240}" "$BIN/hisa_cuda_tests" \
    --gtest_output="json:$OUT/tests.json" ${TEST_FILTER:+--gtest_filter="$TEST_FILTER"} \
    >"$OUT/tests.log" 2>&1
  echo "exit $?" >>"$OUT/tests.log"
  grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) +\]|^\[=+\]|Failure|exit [0-9]+$" "$OUT/tests.log" |
    tail -n 60 | tee -a "$LOG"
fi

if has sanitizer; then
  SAN_FILTER=${SAN_FILTER:-"CudaPrefill.*Fp8*:CudaDecode.Exact*:CudaTopk.*"}
  step "sanitizer: compute-sanitizer memcheck, $SAN_FILTER"
  if command -v compute-sanitizer >/dev/null; then
    run_in "$BIN" timeout "${SAN_TIMEOUT:-150}" compute-sanitizer --tool memcheck --print-limit 20 \
      "$BIN/hisa_cuda_tests" --gtest_filter="$SAN_FILTER" >"$OUT/sanitizer.log" 2>&1
    echo "exit $?" >>"$OUT/sanitizer.log"
    grep -E "ERROR SUMMARY|^\[ +(OK|FAILED|PASSED) +\]|exit [0-9]+$" "$OUT/sanitizer.log" | tail -n 20 |
      tee -a "$LOG"
  else
    echo "no compute-sanitizer" | tee -a "$LOG"
  fi
fi

if has sass; then
  step "sass: registers, stack, spills (LDL/STL) and GMMA per kernel of $BIN/hisa_cuda_bench"
  timeout 120 python3 - "$BIN/hisa_cuda_bench" "$OUT/sass.txt" <<'EOF' 2>&1 | tee -a "$LOG"
import re, shutil, subprocess, sys
binary, out = sys.argv[1:3]
def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout
if not shutil.which("cuobjdump"):
    sys.exit("no cuobjdump")
k = {}
name = None
for line in run("cuobjdump", "--dump-resource-usage", binary).splitlines():
    m = re.search(r"Function (\S+):", line)
    if m:
        name = m.group(1)
    elif name and "REG:" in line:
        k[name] = {f: int(v) for f, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}
for line in run("cuobjdump", "--dump-sass", binary).splitlines():
    m = re.search(r"Function : (\S+)", line)
    if m:
        name = m.group(1)
        k.setdefault(name, {})
        continue
    for op in ("LDL", "STL", "GMMA"):
        if re.search(r"\b[A-Z]*" + op + r"\b", line):
            k[name][op] = k[name].get(op, 0) + 1
filt = shutil.which("cu++filt") or shutil.which("c++filt")
names = list(k)
if filt and names:
    demangled = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    if len(demangled) == len(names):
        k = {d: k[n] for n, d in zip(names, demangled)}
rows = [f"{v.get('REG', 0):4d} {v.get('STACK', 0):6d} {v.get('LOCAL', 0):6d} {v.get('LDL', 0):5d} "
        f"{v.get('STL', 0):5d} {v.get('GMMA', 0):5d}  {n}" for n, v in sorted(k.items())]
with open(out, "w") as f:
    f.write(" REG  STACK  LOCAL   LDL   STL  GMMA  kernel\n" + "\n".join(rows) + "\n")
print(f"{len(rows)} kernels -> {out}; with GMMA or spills:")
print(" REG  STACK  LOCAL   LDL   STL  GMMA  kernel")
for r, (n, v) in zip(rows, sorted(k.items())):
    if v.get("GMMA") or v.get("LDL") or v.get("STL"):
        print(r[:220])
EOF
fi

if has ncu; then
  NCU_ARGS=${NCU_ARGS:-"--kernel-name regex:sm90_.*topk --launch-skip 1 --launch-count 1 --set full"}
  NCU_BENCH=${NCU_BENCH:-"--methods flat --prefill 32768 --decode none --no-ceilings"}
  step "ncu: $NCU_ARGS, of hisa_cuda_bench $NCU_BENCH"
  if command -v ncu >/dev/null; then
    run_in "$BIN" timeout "${NCU_TIMEOUT:-200}" ncu $NCU_ARGS --import-source no \
      --export /tmp/hisa_ncu --force-overwrite "$BIN/hisa_cuda_bench" $NCU_BENCH \
      >"$OUT/ncu_run.log" 2>&1
    echo "exit $?" >>"$OUT/ncu_run.log"
    tail -n 5 "$OUT/ncu_run.log" | tee -a "$LOG"
    if [ -f /tmp/hisa_ncu.ncu-rep ]; then
      ncu --import /tmp/hisa_ncu.ncu-rep --page details --print-details all >"$OUT/ncu_details.txt" 2>&1
      ncu --import /tmp/hisa_ncu.ncu-rep --page source --csv --print-source sass \
        >"$OUT/ncu_source_sass.csv" 2>&1
      grep -E "Duration|DRAM Throughput|Issue Slots Busy|No Eligible|Eligible Warps|Registers Per" \
        "$OUT/ncu_details.txt" | head -n 14 | tee -a "$LOG"
    fi
  else
    echo "no ncu" | tee -a "$LOG"
  fi
fi

if has times; then
  TIMES_CASES=${TIMES_CASES:-"--methods flat,hisa --prefill none --decode 1x131072;--methods flat,hisa --prefill none --decode 64x131072;--methods hisa --prefill 131072 --decode none"}
  step "times: Nsight Compute's kernel durations, one bench run per case: $TIMES_CASES"
  if command -v ncu >/dev/null; then
    IFS=';' read -ra cases <<<"$TIMES_CASES"
    n=0
    for c in "${cases[@]}"; do
      n=$((n + 1))
      # shellcheck disable=SC2086
      run_in "$BIN" timeout "${TIMES_TIMEOUT:-60}" ncu --metrics gpu__time_duration.sum --csv \
        "$BIN/hisa_cuda_bench" $c --once --no-ceilings >"$OUT/times_$n.csv" 2>&1
      echo "times case $n ($c): exit $?" | tee -a "$LOG"
    done
    python3 bench/kernel_times.py "$OUT" "$TIMES_CASES" 2>&1 | tee "$OUT/times.txt" | tee -a "$LOG"
  else
    echo "no ncu" | tee -a "$LOG"
  fi
fi

if has python; then
  step "python: python/device_check.sh"
  OUT=$OUT timeout "${PY_TIMEOUT:-240}" bash python/device_check.sh >/dev/null 2>&1
  echo "python device check exit $?" | tee -a "$LOG"
  grep -E "passed|failed|error|Error|Fatal|probe|overhead|graph|eager|==>" \
    "$OUT/python_device_check.log" 2>/dev/null | tail -n 40 | tee -a "$LOG"
fi

if has needle; then
  NEEDLE_ARGS=${NEEDLE_ARGS:-"--tiny --budget 100 --idx-seconds 20"}
  step "needle: model/study.py needle $NEEDLE_ARGS"
  # shellcheck disable=SC2086
  HISA_PYTHONPATH=$ROOT/${HISA_BUILD_DIR:-build-device}/python timeout "${NEEDLE_TIMEOUT:-120}" \
    python3 model/study.py needle $NEEDLE_ARGS --out "$OUT/needle" >"$OUT/needle.log" 2>&1
  echo "needle exit $?" | tee -a "$LOG"
  tail -n 12 "$OUT/needle.log" | tee -a "$LOG"
fi

if has summary; then
  step summary
  python3 - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import glob, json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(out, n)))
    except Exception:
        return None
def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)
t = load("tests.json")
if t:
    print(f"tests: {t['tests']} run, {t['failures']} failed, {t.get('disabled', 0)} disabled")
b = load("bench.json")
if b:
    c = b.get("ceilings", {})
    print(f"bench on {b['device']} at {b['date_utc']} (commit {b.get('commit', '-')}): copy "
          f"{f(c.get('copy_tbps'))} TB/s, paged read {f(c.get('read_paged_tbps'))} TB/s, fp8 GEMM "
          f"{f(c.get('fp8_gemm_tflops'), '{:.0f}')} TFLOP/s")
    for name, u in b.get("baselines", {}).items():
        if u:
            print(f"  baseline {name}: {u.get('file')} on {u.get('device')}, usable {u.get('usable')}")
    print("kind     method  L/tokens   ms        ns/tok   TFLOP/s  checked  vs DG logits  vs DG+topk  vs torch")
    for r in b["results"]:
        if r["kind"] not in ("prefill", "ragged"):
            continue
        L = r.get("L", r.get("tokens", "-"))
        if "error" in r:
            print(f"{r['kind']:<8} {r['method']:<7} {L!s:<10} error: {r['error'][:100]}")
            continue
        s = r.get("speedups", {})
        print(f"{r['kind']:<8} {r['method']:<7} {L!s:<10} {r['median_ms']:<9.3f} {r['ns_per_token']:<8.1f} "
              f"{r['tflops']:<8.1f} {r['rows_checked'] - r['rows_failed']}/{r['rows_checked']:<6} "
              f"{f(s.get('deepgemm_logits')):<13} {f(s.get('deepgemm_logits_topk')):<11} {f(s.get('torch'))}")
        if r["kind"] == "ragged":
            print(f"         ragged time / same-work single {r['time_over_same_work_single']:.2f} (goal <= 1.3)")
    sw = [r for r in b["results"] if r["kind"] == "sweep" and "error" not in r]
    for r in sw:
        print(f"sweep L={r['L']} B={r['B']} m*B={r['budget']}: {r['median_ms']:.3f} ms, {r['tflops']:.0f} TFLOP/s")
    print("decode  method  b    ctx      n  sync us  rested us  b2b us  TB/s  %read  checked  vs DG rested  vs DG+topk  vs torch")
    for r in b["results"]:
        if r["kind"] != "decode":
            continue
        head = f"decode  {r['method']:<7} {r['batch']:<4} {r['context']:<8} {r['next_n']}"
        if "error" in r:
            print(f"{head}  error: {r['error'][:100]}")
            continue
        s = r.get("speedups", {})
        frac = r.get("fraction_of_read_ceiling")
        print(f"{head}  {r['sync_us']:7.1f}  {r['rested_us']:9.1f}  {r['back_to_back_us']:6.1f}  "
              f"{r['tbps_rested']:4.2f}  {f(frac and 100 * frac, '{:.0f}'):>5}  "
              f"{r['rows_checked'] - r['rows_failed']}/{r['rows_checked']:<5}  "
              f"{f(s.get('deepgemm_logits_rested')):<12}  {f(s.get('deepgemm_logits_topk_rested')):<10}  "
              f"{f(s.get('torch_sync'))}")
dg = load("deepgemm.json")
if dg:
    print(f"deepgemm {dg.get('deep_gemm')} on {dg.get('device')}:")
    for r in dg.get("results", []):
        if r["kind"] == "prefill":
            print(f"  prefill L={r['L']}: logits {r['logits']['median_ms']:.3f} ms, +topk "
                  f"{r['logits_topk']['median_ms']:.3f} ms")
        else:
            print(f"  decode b={r['batch']} ctx={r['context']}: rested {r['rested_gpu_us']:.1f} us, "
                  f"kineto {f(r.get('kineto_us'), '{:.1f}')} us, sync {r['sync_us']:.1f} us, "
                  f"+topk rested {r['topk_rested_gpu_us']:.1f} us")
tb = load("torch.json")
if tb:
    print(f"torch {tb.get('torch')} on {tb.get('device')}: fp8 GEMM {f(tb.get('fp8_gemm_tflops'), '{:.0f}')} "
          f"TFLOP/s, copy {f(tb.get('copy_tbps'))} TB/s")
# Each A/B's summary, AB_NAME.json, beside its first old run AB_NAME_old_1.json.
for first in sorted(glob.glob(os.path.join(out, "*_old_1.json"))):
    tag = os.path.basename(first)[: -len("_old_1.json")]
    ab = load(tag + ".json")
    if not ab:
        continue
    for c in ab["cases"]:
        print(f"{tag} {c['case']} {c['metric']}: old {c['old_median']:.4g}, new {c['new_median']:.4g}, "
              f"new/old {c['new_over_old']:.4f}")
EOF
fi
step "done"
pack
[ "${PACK:-1}" = 1 ] && rm -rf "$OUT"
