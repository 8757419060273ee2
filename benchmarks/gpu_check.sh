#!/usr/bin/env bash
# GPU checks, run once on a machine with one CUDA GPU (e.g. an H100), from any directory; ~5-6 minutes:
#   1. the model benchmark on CUDA (tada.bench.model): TAda2D-R50, TSN-R50 and the channels-last
#      2-D ResNet-50 at 16 clips x 8 x 224, eval and train step, bf16 and fp32, eager and replayed
#      from a CUDA graph (TRAIN.CUDA_GRAPHS), peak memory;
#   2. the CUDA tests (pytest -m cuda, the compile test left to step 5): AMP bf16/fp16, CUDA graphs
#      equal eager, no host sync per iteration;
#   3. short real training runs of TAda2D-R50 8x224, batch 16, bf16, CUDA graphs, fed by JPEG frame
#      folders decoded by 14 CPU workers and by nvjpeg on the GPU: clips/s and data-wait fraction;
#   4. per-block GPU cost (python -m tada.bench.gpu_profile --parts blocks);
#   5. CUDA model checks (python -m tada.bench.gpu_model_check): op vs grouped reference, CUDA vs CPU in
#      float64, bf16 vs fp32, compiled vs eager (values and gradients).
# Needs python3 with torch+CUDA, numpy, pytest (torchvision for nvjpeg); PyAV and simplejpeg come
# from .whl/ when that folder exists. Each step's failure is reported and does not stop the
# others; results go to $OUT if set. python -m tada.bench.gpu_frames (loader-only throughput per data
# route) and tada.bench.gpu_profile --parts whole,compiled (kernel tables) are separate runs.
cd "$(dirname "$0")/.." || exit 1
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src; else export PYTHONPATH=src; fi
export PYTHONUNBUFFERED=1
RESULTS="${OUT:-/tmp/tada_gpu_check}"
mkdir -p "$RESULTS"
declare -A STATUS
START=$(date +%s)

section() { printf '\n==================== %s [%d s] ====================\n' "$*" "$(( $(date +%s) - START ))"; }

section "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi not available"
python3 -c "import torch, av; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None, '| PyAV', av.__version__)" 2>&1

section "1/5 model benchmark on CUDA (tada benchmark model), eager and CUDA graphs"
timeout 150 python3 -m tada benchmark model --device cuda --batch 16 --frames 8 --size 224 \
    --modes eval,train --precisions bf16,fp32 --channels-last on --cuda-graphs off,on --iters 10 --warmup 3 \
    --json "$RESULTS/model_bench.json" > "$RESULTS/model_bench.log" 2>&1
STATUS[model_bench]=$?
grep -v " s/step$" "$RESULTS/model_bench.log" | tail -n 30

section "2/5 CUDA tests: pytest -m cuda"
timeout 170 python3 -m pytest -m cuda -k "not compiled" -q -p no:cacheprovider -o addopts="" -rs --durations=5 tests \
    > "$RESULTS/cuda_tests.log" 2>&1
STATUS[cuda_tests]=$?
tail -n 25 "$RESULTS/cuda_tests.log"

section "3/5 training runs fed by frame folders (CPU JPEG, GPU nvjpeg), CUDA graphs"
timeout 130 python3 -m tada.bench.gpu_train --routes frames,frames-gpu --cuda-graphs --steps 100 --warmup-steps 30 \
    --out /tmp/tada_gpu_train --summary "$RESULTS/gpu_train.json" > "$RESULTS/gpu_train.log" 2>&1
STATUS[gpu_train]=$?
grep -E "clips/s through|Error|error" "$RESULTS/gpu_train.log" | tail -n 12

section "4/5 per-block cost"
timeout 40 python3 -m tada.bench.gpu_profile --parts blocks > "$RESULTS/blocks.log" 2>&1
STATUS[blocks]=$?
grep -E "^\||FAIL" "$RESULTS/blocks.log"

section "5/5 CUDA model checks"
timeout 110 python3 -m tada.bench.gpu_model_check > "$RESULTS/check.log" 2>&1
STATUS[check]=$?
grep -v -i "warn" "$RESULTS/check.log" | tail -n 16

section "summary"
failed=0
for step in model_bench cuda_tests gpu_train blocks check; do
    code=${STATUS[$step]}
    if [ "$code" -eq 0 ]; then word=ok; elif [ "$code" -eq 124 ]; then word="TIMED OUT"; failed=1; else word="FAILED (exit $code)"; failed=1; fi
    printf '%-12s %s\n' "$step" "$word"
done
echo "logs and JSON: $RESULTS"
exit $failed
