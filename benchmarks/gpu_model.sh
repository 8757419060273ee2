#!/usr/bin/env bash
# Model-side GPU run (one CUDA GPU, ~8 minutes on an H100 plus the machine's start): correctness checks, the model
# benchmark at the zoo's per-GPU batch (16 clips x 8 x 224): TAda2D-R50, TSN-R50 and the
# channels-last 2-D ResNet-50 reference, eval and train step, bf16 autocast and fp32, eager;
# then where a bf16 train step's GPU time goes (profile), then TAda2D-R50 vs the reference compiled
# (bf16). Peak memory per model. Results in $OUT.
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=src PYTHONUNBUFFERED=1
RESULTS="${OUT:-/tmp/tada_gpu_model}"
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
timeout 120 python3 benchmarks/gpu_model_check.py 2>&1 | tee "$RESULTS/check.log"
timeout 200 python3 benchmarks/model_speed.py --device cuda --batch 16 --frames 8 --size 224 \
    --modes eval,train --precisions bf16,fp32 --channels-last on --compile off --iters 10 --warmup 3 \
    --json "$RESULTS/eager.json" 2>&1 | tee "$RESULTS/eager.log" | tail -n 16
timeout 90 python3 benchmarks/gpu_model_profile.py --mode train --precision bf16 2>&1 | tee "$RESULTS/profile.log" | tail -n 60
timeout 300 python3 benchmarks/model_speed.py --device cuda --batch 16 --frames 8 --size 224 \
    --models tada2d_r50 --modes eval,train --precisions bf16 --channels-last on --compile on --iters 10 --warmup 3 \
    --json "$RESULTS/compiled.json" 2>&1 | tee "$RESULTS/compiled.log" | tail -n 8
