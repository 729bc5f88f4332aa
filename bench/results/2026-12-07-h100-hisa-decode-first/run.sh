#!/usr/bin/env bash
# Device run, part A (tests, DeepGEMM, bench, A/B) or part B (ncu, SASS, ragged/sweep/1M,
# python device check, demo). PART=A|B.
set -uo pipefail
O=/tmp/out; rm -rf $O; mkdir -p $O
export PATH=/usr/local/cuda/bin:$PATH
T0=$(date +%s); t() { echo "=== $* +$(($(date +%s)-T0)) s" | tee -a $O/run1.log; }
fin() { tar czf $OUT/part$PART.tgz -C /tmp out; }
trap fin EXIT
chmod +x .carry-*/hisa* 2>/dev/null
if [ "$PART" = A ]; then
t env+tests; OUT=$O STEPS="env tests" bash bench/device_run.sh >> $O/run1.log 2>&1
grep -E "tests from|FAILED" $O/tests.log | head -30
t deepgemm; OUT=$O STEPS=deepgemm DG_PREFILL=32768,65536,131072 DG_DECODE=1x131072,8x131072,64x131072,128x131072,64x32768,64x8192 bash bench/device_run.sh >> $O/run1.log 2>&1
t torch; OUT=$O STEPS=torch TORCH_ARGS='--prefill 32768 --decode none' bash bench/device_run.sh >> $O/run1.log 2>&1
t bench; OUT=$O STEPS=bench BENCH_TIMEOUT=240 BENCH_ARGS="--methods flat,hisa,block --prefill 32768,65536,131072 --decode 1x131072,8x131072,64x131072,128x131072,64x32768,64x8192" bash bench/device_run.sh >> $O/run1.log 2>&1
grep -E "^(flat|hisa|block) |token stage|pooled-cache" $O/run.log | tail -40
t ab-flat; OUT=$O/abf STEPS=ab AB_ROUNDS=2 bash bench/device_run.sh >> $O/run1.log 2>&1
grep -E "new/old|prefill |decode " $O/abf/run.log | head
else
t ab-hisa; OUT=$O/abh OLD_BIN=.carry-base STEPS=ab AB_ROUNDS=2 AB_ARGS="--methods hisa --prefill 32768,131072 --decode none" bash bench/device_run.sh >> $O/run1.log 2>&1
t ncu-split
for L in 32768 131072; do
  timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --csv .carry-cuda/hisa_cuda_bench --once --methods hisa --prefill $L --decode none --no-ceilings > $O/ncu_split_$L.csv 2>&1
done
timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --csv .carry-cuda/hisa_cuda_bench --once --methods hisa --prefill none --decode 64x131072,1x131072 --no-ceilings > $O/ncu_split_decode.csv 2>&1
t ncu-flat
for side in old cuda; do
  timeout 100 ncu --clock-control none -k regex:sm90_f --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section LaunchStats .carry-$side/hisa_cuda_bench --once --methods flat --prefill 32768 --decode none --no-ceilings > $O/ncu_flat_$side.txt 2>&1
done
timeout 100 ncu --clock-control none -k regex:sm90_fused --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis .carry-cuda/hisa_cuda_bench --once --methods hisa --prefill 131072 --decode none --no-ceilings > $O/ncu_hisa_token.txt 2>&1
timeout 100 ncu --clock-control none -k regex:sm90_fused --launch-skip 0 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats .carry-cuda/hisa_cuda_bench --once --methods hisa --prefill 131072 --decode none --no-ceilings > $O/ncu_hisa_block.txt 2>&1
t sass
python3 .carry-diag/sass.py .carry-old/hisa_cuda_bench 'flat_topk' $O/sass_old.txt.gz > $O/sass_old_list.txt 2>&1
python3 .carry-diag/sass.py .carry-cuda/hisa_cuda_bench 'fused_topk' $O/sass_new.txt.gz > $O/sass_new_list.txt 2>&1
t ragged-sweep-1m
OUT=$O/big STEPS=bench BENCH_TIMEOUT=220 BENCH_ARGS="--methods hisa,block --prefill 262144,524288,1048576 --decode 64x131072,64x1048576,1x1048576 --next-n 1,2,4 --ragged --sweep" bash bench/device_run.sh >> $O/run1.log 2>&1
t demo; timeout 60 .carry-cuda/hisa demo --device cuda > $O/demo.txt 2>&1
t done
fi
