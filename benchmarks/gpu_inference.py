"""GPU detection throughput: RetinaNet and FCOS (ResNet-50 FPN, 512 px), fp32 vs mixed precision.

Self-contained: needs only torch, torchvision and numpy (uses the repo's detector builder when
``wsi_pipeline.models.detector`` imports - installed, or ``PYTHONPATH=.`` as ``benchmarks/gpu_run.sh``
sets it - else torchvision's models with the same settings).
Each measured step includes the host->device copy of a pinned uint8 batch (B, 512, 512, 3),
normalisation on the GPU, the forward pass and box post-processing, then a synchronise.
Random weights: speed does not depend on training, except through the number of boxes
post-processed (kept realistic here by a 0.05 score threshold and at most 300 boxes per patch).

Extrapolation to one TCT slide of 60,000 x 60,000 px scanned at 0.5 um/px, tiled at the default
0.5 um/px with 512 px patches and 128 px overlap (stride 384): a 156 x 156 grid = 24,336 patches,
of which ~60% lie on the cell-bearing area kept by the mask -> ~14,600 patches. Reading those
patches from the JPEG store (~500 patches/s per CPU core measured on the 2-core dev machine)
runs in background threads and is reported separately.

Usage:
    python benchmarks/gpu_inference.py                 # on the GPU machine, ~1-3 min
    python benchmarks/gpu_inference.py --smoke         # tiny sizes on the CPU, to check the script runs
    python benchmarks/gpu_inference.py --batch-size 64 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

NUM_CLASSES = 10
SLIDE_PX, SLIDE_MPP, TARGET_MPP, PATCH, OVERLAP, CELL_FRACTION = 60_000, 0.5, 0.5, 512, 128, 0.6
TARGET_SECONDS = 60.0


def slide_patch_count(slide_px: int = SLIDE_PX, patch: int = PATCH, overlap: int = OVERLAP,
                      fraction: float = CELL_FRACTION) -> tuple[int, int]:
    """(grid patches, patches on the cell area) for a square slide at the target resolution."""
    size = slide_px * SLIDE_MPP / TARGET_MPP
    per_axis = math.ceil((size - patch) / (patch - overlap)) + 1
    grid = per_axis * per_axis
    return grid, int(round(grid * fraction))


def build_model(kind: str, backbone: str, image_size: int) -> tuple[torch.nn.Module, str]:
    """The repo's Detector when importable, else a torchvision model with the same settings."""
    try:
        from wsi_pipeline.models.detector import DetectorSpec, build_detector
        from wsi_pipeline.models.losses import build_loss

        spec = DetectorSpec(num_classes=NUM_CLASSES, detector=kind, backbone=backbone, image_size=image_size)
        return build_detector(spec, build_loss("efl", NUM_CLASSES)), "wsi_pipeline Detector.predict"
    except ImportError as exc:
        print(f"(wsi_pipeline.models not importable: {exc}; using torchvision models directly)")
    from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn

    factory = retinanet_resnet50_fpn if kind == "retinanet" else fcos_resnet50_fpn
    model = factory(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=image_size,
                    max_size=image_size, score_thresh=0.05, detections_per_img=300)
    return model, "torchvision model(images)"


def run_model(model: torch.nn.Module, images: torch.Tensor) -> None:
    if hasattr(model, "predict"):
        model.predict(images, score_threshold=0.05)
    else:
        model(list(images.permute(0, 3, 1, 2).float().div_(255)))


def measure(model: torch.nn.Module, host_batches: list[torch.Tensor], device: torch.device, precision: str,
            seconds: float, warmup: int) -> dict[str, float]:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step(i: int) -> None:
        images = host_batches[i % len(host_batches)].to(device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            run_model(model, images)

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    n, t0 = 0, time.perf_counter()
    while True:
        step(n)
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 2:
            break
    batch = host_batches[0].shape[0]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"patches_per_s": n * batch / elapsed, "ms_per_batch": 1000 * elapsed / n, "batches": n,
            "peak_gib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run on any device (checks the script)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per configuration")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    size, batch, seconds, warmup = (128, 2, 0.1, 1) if args.smoke else (PATCH, args.batch_size, args.seconds, 3)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" below means TF32 matmuls/convs on Ampere+
        torch.backends.cudnn.allow_tf32 = True
        mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        name = torch.cuda.get_device_name(device)
    else:
        mixed, name = "bf16", "CPU"
    print(f"device: {name}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"{size} px patches, batch {batch}, {seconds:g} s per configuration")
    rng = np.random.default_rng(0)
    pin = device.type == "cuda"
    # pale background with darker blobs, like stained cells on glass; uint8 as read from the store
    host = []
    for _ in range(4):
        arr = rng.integers(200, 250, (batch, size, size, 3), dtype=np.uint8)
        arr[:, size // 4: size // 2, size // 4: size // 2] //= 3
        t = torch.from_numpy(arr)
        host.append(t.pin_memory() if pin else t)

    grid, patches = slide_patch_count()
    results = []
    started = time.perf_counter()
    for kind in ("retinanet", "fcos"):
        model, how = build_model(kind, args.backbone, size)
        model.eval().to(device)
        for precision in ("fp32", mixed):
            r = measure(model, host, device, precision, seconds, warmup)
            r.update(detector=kind, backbone=args.backbone, precision=precision, batch=batch, api=how,
                     slide_seconds=patches / r["patches_per_s"])
            results.append(r)
            print(f"  {kind:9s} {args.backbone} {precision:4s}: {r['patches_per_s']:8.1f} patches/s "
                  f"({r['ms_per_batch']:.1f} ms/batch, peak {r['peak_gib']:.1f} GiB) -> "
                  f"{r['slide_seconds']:.0f} s per slide")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"\nSlide assumption: {SLIDE_PX} x {SLIDE_PX} px at {SLIDE_MPP} um/px, {PATCH} px patches at {TARGET_MPP} "
          f"um/px with {OVERLAP} px overlap: {grid} grid patches, x{CELL_FRACTION} cell area = {patches} patches.")
    for kind in ("retinanet", "fcos"):
        fp32, mp = [r for r in results if r["detector"] == kind]
        verdict = "meets" if mp["slide_seconds"] <= TARGET_SECONDS else "misses"
        print(f"{kind}: mixed precision {mp['patches_per_s'] / fp32['patches_per_s']:.2f}x fp32; "
              f"{mp['slide_seconds']:.0f} s per slide with {mp['precision']} ({verdict} the {TARGET_SECONDS:.0f} s target; "
              f"needs {patches / TARGET_SECONDS:.0f} patches/s)")
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "grid": grid, "patches": patches, "results": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
