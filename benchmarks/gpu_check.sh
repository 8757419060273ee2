#!/usr/bin/env bash
# GPU checks, run once on a machine with one CUDA GPU (e.g. an H100), from any directory:
#   1. the CUDA tests (pytest -m cuda): AMP bf16/fp16, torch.compile, no host sync per iteration;
#   2. a short real training run of TAda2D-R50 8x224, batch 16, on decoded synthetic videos
#      (clips/s, fraction of time waiting for data, peak GPU memory; benchmarks/gpu_train.py);
#   3. the model benchmark on CUDA (tada.models.speed: TAda2D/TSN vs a 2-D ResNet-50);
#   4. frame folders: clips/s fed by 14 workers (video, CPU JPEG, GPU nvjpeg) vs the training rate.
# Needs python3 with torch+CUDA, numpy, pytest; PyAV comes from .whl/ when that folder exists.
# Each step's failure is reported and does not stop the others; results go to $OUT if set.
# Total: about 6-7 minutes on an H100.
cd "$(dirname "$0")/.." || exit 1
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src; else export PYTHONPATH=src; fi
export PYTHONUNBUFFERED=1
RESULTS="${OUT:-/tmp/tada_gpu_check}"
mkdir -p "$RESULTS"
declare -A STATUS

section() { printf '\n==================== %s ====================\n' "$*"; }

section "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi not available"
python3 -c "import torch, av; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None, '| PyAV', av.__version__)" 2>&1

section "1/4 CUDA tests: pytest -m cuda"
timeout 240 python3 -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors -o addopts="" -rs tests \
    > "$RESULTS/cuda_tests.log" 2>&1
STATUS[cuda_tests]=$?
tail -n 40 "$RESULTS/cuda_tests.log"

section "2/4 short real training run: TAda2D-R50 8x224, batch 16, bf16, decoded synthetic videos"
timeout 240 python3 benchmarks/gpu_train.py --out /tmp/tada_gpu_train --summary "$RESULTS/gpu_train.json" \
    > "$RESULTS/gpu_train.log" 2>&1
STATUS[gpu_train]=$?
grep -v "tada.engine.trainer: [0-9]*: epoch .* iter " "$RESULTS/gpu_train.log" | tail -n 45

section "3/4 model benchmark on CUDA (tada.models.speed)"
timeout 150 python3 - "$RESULTS/model_bench.json" > "$RESULTS/model_bench.log" 2>&1 <<'PY'
import argparse, sys
from tada.models import speed
parser = argparse.ArgumentParser()
speed.add_arguments(parser)
args = parser.parse_args(["--device", "cuda", "--batch", "16", "--frames", "8", "--size", "224",
                          "--modes", "eval,train", "--precisions", "fp32,bf16", "--channels-last", "on",
                          "--iters", "5", "--warmup", "2", "--json", sys.argv[1]])
raise SystemExit(speed.run(args))
PY
STATUS[model_bench]=$?
tail -n 30 "$RESULTS/model_bench.log"

section "4/4 frame folders: loader throughput and data wait (benchmarks/gpu_frames.py)"
timeout 240 python3 benchmarks/gpu_frames.py > "$RESULTS/gpu_frames.log" 2>&1
STATUS[gpu_frames]=$?
tail -n 40 "$RESULTS/gpu_frames.log"

section "summary"
failed=0
for step in cuda_tests gpu_train model_bench gpu_frames; do
    code=${STATUS[$step]}
    if [ "$code" -eq 0 ]; then word=ok; elif [ "$code" -eq 124 ]; then word="TIMED OUT"; failed=1; else word="FAILED (exit $code)"; failed=1; fi
    printf '%-12s %s\n' "$step" "$word"
done
echo "logs and JSON: $RESULTS"
exit $failed
