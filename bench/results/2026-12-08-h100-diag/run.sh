#!/usr/bin/env bash
# One device call, in priority order, everything straight under $OUT (a killed run keeps what it
# wrote): tests of main (.carry-cuda) and decode-splits (.carry-ds); the flat prefill A/B and
# Nsight Compute of be28536 (.carry-old) against main; decode bench main vs decode-splits with
# per-kernel times; the python device check; Nsight Compute of the HISA prefill stages.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
O=$OUT; R=/tmp/diag; mkdir -p $R
T0=$(date +%s)
# The carried binaries come xz-compressed (the transfer limit).
for f in .carry-*/*.xz; do
  [ -f "$f" ] || continue
  python3 -c "import lzma,sys,os; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read()); os.chmod(sys.argv[1][:-3],0o755)" "$f" && rm -f "$f"
done
log() { echo "=== $* (+$(($(date +%s) - T0)) s)" | tee -a $O/run.log; }
with() { local d=$1; shift; LD_LIBRARY_PATH=$ROOT/$d:${LD_LIBRARY_PATH:-} "$@"; }
log env
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
  cat .carry-cuda/COMMIT .carry-ds/COMMIT .carry-old/COMMIT .carry-x/COMMIT; which ncu cuobjdump nvdisasm; } 2>&1 | tee -a $O/run.log
for b in cuda ds; do
  log "tests $b"
  F=; [ $b = ds ] && F="--gtest_filter=CudaHisaDecode.*:CudaDecode.*"
  with .carry-$b timeout 120 .carry-$b/hisa_cuda_tests $F --gtest_output=json:$O/tests_$b.json >$O/tests_$b.log 2>&1
  echo "exit $?" >>$O/tests_$b.log
  grep -E "FAILED|PASSED|^exit|tests from .* ran" $O/tests_$b.log | tail -8 | tee -a $O/run.log
done
AB_SIDES="old cuda"; [ -x .carry-x/hisa_cuda_bench ] && AB_SIDES="old cuda x"
for n in 1 2; do
  for s in $AB_SIDES; do
    log "ab $s $n"
    with .carry-$s timeout 50 .carry-$s/hisa_cuda_bench --json $O/ab_${s}_$n.json --methods flat --prefill 131072 --decode none --no-ceilings >$O/ab_${s}_$n.log 2>&1
    grep -iE "prefill" $O/ab_${s}_$n.log | tail -2 | tee -a $O/run.log
  done
done
SEC="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats --section SourceCounters --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis"
for s in old cuda; do
  log "ncu flat $s"
  with .carry-$s timeout 80 ncu --kernel-name regex:sm90_.*topk --launch-skip 1 --launch-count 1 $SEC \
    --import-source no --export $R/ncu_flat_$s --force-overwrite .carry-$s/hisa_cuda_bench --methods flat --prefill 65536 --decode none --no-ceilings >$O/ncu_flat_$s.log 2>&1
  echo "exit $?" >>$O/ncu_flat_$s.log; tail -2 $O/ncu_flat_$s.log | tee -a $O/run.log
  if [ -f $R/ncu_flat_$s.ncu-rep ]; then
    ncu --import $R/ncu_flat_$s.ncu-rep --page details --print-details all >$O/ncu_flat_${s}_details.txt 2>&1
    ncu --import $R/ncu_flat_$s.ncu-rep --page source --csv --print-source sass 2>&1 | gzip >$O/ncu_flat_${s}_sass.csv.gz
    grep -E "Duration|Issue Slots Busy|No Eligible|Registers Per" $O/ncu_flat_${s}_details.txt | head -6 | tee -a $O/run.log
  fi
  timeout 60 cuobjdump -sass .carry-$s/hisa_cuda_bench 2>/dev/null | gzip >$O/sass_$s.txt.gz
done
DEC="--methods flat,hisa,block --prefill none --decode 1x131072,8x131072,64x131072,128x131072,64x8192 --no-ceilings"
log "bench decode cuda"
with .carry-cuda timeout 70 .carry-cuda/hisa_cuda_bench --json $O/dec_cuda.json $DEC --next-n 1 >$O/dec_cuda.log 2>&1
echo "exit $?" >>$O/dec_cuda.log; grep -iE "decode|FAIL|exit" $O/dec_cuda.log | tail -30 | tee -a $O/run.log
log "bench decode ds"
with .carry-ds timeout 100 .carry-ds/hisa_cuda_bench --json $O/dec_ds.json $DEC --next-n 1,2 >$O/dec_ds.log 2>&1
echo "exit $?" >>$O/dec_ds.log; grep -iE "decode|FAIL|exit" $O/dec_ds.log | tail -40 | tee -a $O/run.log
for b in cuda ds; do
  for c in 64x131072; do
    log "ncu times $b $c"
    with .carry-$b timeout 40 ncu --metrics gpu__time_duration.sum --csv \
      .carry-$b/hisa_cuda_bench --methods hisa --prefill none --decode $c --once --no-ceilings >$O/ncut_${b}_$c.csv 2>&1
  done
done
log "bench b1x8192 flat (python overhead shape)"
with .carry-cuda timeout 40 .carry-cuda/hisa_cuda_bench --json $O/py_shape.json --methods flat --prefill none --decode 1x8192 --no-ceilings >$O/py_shape.log 2>&1
grep -iE "decode" $O/py_shape.log | tail -4 | tee -a $O/run.log
log "python device check"
OUT=$O timeout 170 bash python/device_check.sh >/dev/null 2>&1; echo "python exit $?" | tee -a $O/run.log
grep -E "passed|failed|error|graph_us|replace" $O/python_device_check.log | tail -12 | tee -a $O/run.log
log "ncu hisa prefill"
with .carry-cuda timeout 50 ncu --metrics gpu__time_duration.sum --csv .carry-cuda/hisa_cuda_bench --methods hisa --prefill 32768,131072 --decode none --once --no-ceilings >$O/ncut_hisa_prefill.csv 2>&1
with .carry-cuda timeout 60 ncu --kernel-name regex:sm90_fused --launch-count 3 $SEC --import-source no --export $R/ncu_hisa --force-overwrite \
  .carry-cuda/hisa_cuda_bench --methods hisa --prefill 32768 --decode none --once --no-ceilings >$O/ncu_hisa.log 2>&1
tail -2 $O/ncu_hisa.log | tee -a $O/run.log
[ -f $R/ncu_hisa.ncu-rep ] && { ncu --import $R/ncu_hisa.ncu-rep --page details --print-details all >$O/ncu_hisa_details.txt 2>&1
  ncu --import $R/ncu_hisa.ncu-rep --page source --csv --print-source sass 2>&1 | gzip >$O/ncu_hisa_sass.csv.gz; }
log done
