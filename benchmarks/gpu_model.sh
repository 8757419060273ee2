#!/usr/bin/env bash
# Where TAda2D-R50's GPU time goes (one CUDA GPU, ~5 minutes on an H100 plus the machine's start):
# the bf16 train step of the 2-D ResNet-50 reference, TSN-R50 and TAda2D-R50, eager and replayed
# from a CUDA graph, with their kernel tables (python -m tada.bench.gpu_profile --parts whole), then
# the per-block costs (--parts blocks), then the compiled train steps and their kernels (--parts
# compiled; about 1 minute of compilation per model). Results in $OUT. The routine checks and the
# benchmark table are benchmarks/gpu_check.sh.
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=src PYTHONUNBUFFERED=1
RESULTS="${OUT:-/tmp/tada_gpu_model}"
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 90 python3 -m tada.bench.gpu_profile --parts whole,blocks > "$RESULTS/profile.log" 2>&1
grep -E "^\||kernels:|===|FAIL" "$RESULTS/profile.log"
timeout 240 python3 -m tada.bench.gpu_profile --parts compiled --iters 5 > "$RESULTS/compiled.log" 2>&1
grep -E "===|kernels:|FAIL" "$RESULTS/compiled.log"
