"""CPU detection throughput of `wsi detect` and how long the model waits for data.

Slide: the real TCT field ../shared/data/cytology/lbc_field.jpg wrapped as a 0.25 um/px pyramidal
TIFF, tiled with the default settings (0.5 um/px, 512 px patches, 128 px overlap, JPEG store).
Model: the default detector (RetinaNet, ResNet-18 FPN-256, 10 classes) at 512 px, random weights.

Measured in the same run:
  baseline  the model alone on batches already in memory (compute only)
  pipeline  detect_store end to end: prefetching reads from the store, model, merge, table
  reading   decoding patches from the store alone
and printed as ratios; `idle` is the share of the batch loop the model waited for data (target < 10%).

With --starter: the bundled starter model (FCOS, EfficientNet-Lite0, 256 px at 0.5 um/px) against the
demo detector's architecture (FCOS, ResNet-18 FPN-64, 256 px; configs/train_demo.yaml, which works at
1 um/px), model alone on the same 256 px patches cut from the field; patches/s and mm^2 of slide per s.

Usage: python benchmarks/inference.py [--batch-size 4] [--threads 0] [--repeat 2] [--starter]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from wsi_pipeline.benchmarking.images import LBC_FIELD as FIELD
from wsi_pipeline.benchmarking.images import read_rgb
from wsi_pipeline.config import InferenceConfig, TilingConfig
from wsi_pipeline.inference import detect_store
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
from wsi_pipeline.models.checkpoint import save_checkpoint
from wsi_pipeline.models.detector import DetectorSpec, build_detector
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.store.patches import PatchStore
from wsi_pipeline.taxonomy import load_taxonomy
from wsi_pipeline.tiling import tile_slide


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs (best is reported)")
    parser.add_argument("--starter", action="store_true", help="starter model vs the ResNet-18 demo architecture")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.starter:
        return compare_starter(args.batch_size, args.threads)
    tiling = TilingConfig(scheduler="threads")
    names = load_taxonomy().names

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = read_rgb(FIELD)
        slide = wrap_image_as_slide(image, work / "lbc_field.svs", mpp=0.25)
        tile_slide(slide, work, tiling, progress=False)
        store = PatchStore.open(work / "patches.zarr")
        spec = DetectorSpec(num_classes=len(names), image_size=tiling.patch_size)
        torch.manual_seed(0)
        detector = build_detector(spec, build_loss("efl", len(names))).eval()
        ckpt = save_checkpoint(work / "default.pt", detector, class_names=names, target_mpp=tiling.target_mpp,
                               patch_size=tiling.patch_size, loss_name="efl", loss_params={})
        cfg = InferenceConfig(device="cpu", batch_size=args.batch_size, num_threads=args.threads)
        torch.set_num_threads(args.threads or torch.get_num_threads())
        n = store.n_patches
        print(f"store: {n} patches of {store.patch_size} px ({store.attrs['codec']}), "
              f"model: retinanet/{spec.backbone} FPN-{spec.fpn_channels} at {spec.image_size} px, "
              f"batch {args.batch_size}, {torch.get_num_threads()} torch threads")

        t0 = time.perf_counter()
        patches = torch.from_numpy(store.patches[:])
        read_rate = n / (time.perf_counter() - t0)

        with torch.inference_mode():
            detector.predict(patches[: args.batch_size], score_threshold=0.05)  # warm-up
            t0 = time.perf_counter()
            for start in range(0, n, args.batch_size):
                detector.predict(patches[start:start + args.batch_size], score_threshold=0.05)
            base_rate = n / (time.perf_counter() - t0)
        del patches

        best = None
        for i in range(args.repeat):
            result = detect_store(store.path, ckpt, work / f"run{i}", cfg, progress=False)
            if best is None or result.patches_per_second > best.patches_per_second:
                best = result

    print(f"reading only : {read_rate:7.1f} patches/s (decode from the store)")
    print(f"baseline     : {base_rate:7.2f} patches/s (model alone, patches in memory)")
    print(f"wsi detect   : {best.patches_per_second:7.2f} patches/s end to end = {best.patches_per_second / base_rate:.2f}x "
          f"baseline; model idle waiting for data {100 * best.data_wait_fraction:.1f}% (target < 10%)")
    print(f"slide extrapolation: {4000 / best.patches_per_second / 60:.0f} min for a ~4,000-patch slide on this CPU")
    return 0


def _model_rate(detector, patches: torch.Tensor, batch: int) -> float:
    with torch.inference_mode():
        detector.predict(patches[:batch], score_threshold=0.05)  # warm-up
        t0 = time.perf_counter()
        for start in range(0, len(patches), batch):
            detector.predict(patches[start:start + batch], score_threshold=0.05)
        return len(patches) / (time.perf_counter() - t0)


def compare_starter(batch: int, threads: int, n: int = 96) -> int:
    """Model-alone patches/s of the starter model and the demo architecture, measured in one run."""
    from wsi_pipeline.models.bundled import starter_model_path  # noqa: PLC0415
    from wsi_pipeline.models.checkpoint import load_checkpoint  # noqa: PLC0415

    torch.set_num_threads(threads or torch.get_num_threads())
    image = read_rgb(FIELD)
    rng = torch.Generator().manual_seed(0)
    ys = torch.randint(0, image.shape[0] - 256, (n,), generator=rng)
    xs = torch.randint(0, image.shape[1] - 256, (n,), generator=rng)
    patches = torch.stack([torch.from_numpy(image[y:y + 256, x:x + 256].copy()) for y, x in zip(ys, xs)])
    starter = load_checkpoint(starter_model_path()).detector.eval()
    names = load_taxonomy().names
    torch.manual_seed(0)
    demo = build_detector(DetectorSpec(num_classes=len(names), detector="fcos", backbone="resnet18", image_size=256,
                                       fpn_channels=64), build_loss("focal", len(names))).eval()
    demo_rate = _model_rate(demo, patches, batch)  # baseline, same run
    starter_rate = _model_rate(starter, patches, batch)
    mm2 = lambda rate, mpp: rate * (256 * mpp / 1000) ** 2  # noqa: E731
    print(f"{n} patches of 256 px, batch {batch}, {torch.get_num_threads()} torch threads")
    print(f"demo architecture (FCOS ResNet-18 FPN-64, 1 um/px): {demo_rate:6.2f} patches/s = {mm2(demo_rate, 1.0):.3f} mm^2/s")
    print(f"starter model (FCOS EfficientNet-Lite0 FPN-64, 0.5 um/px): {starter_rate:6.2f} patches/s = "
          f"{mm2(starter_rate, 0.5):.3f} mm^2/s")
    print(f"starter / demo: {starter_rate / demo_rate:.2f}x patches/s, {mm2(starter_rate, 0.5) / mm2(demo_rate, 1.0):.2f}x "
          "slide area/s (the starter works at twice the resolution: 4x the patches per mm^2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
