"""Training speed of one detector config: where an iteration's time goes, and which settings speed it up.

Times training iterations (forward, loss, backward, optimiser step) of the network a training config
builds, on a fixed batch of random images with 1-3 boxes each, so that data loading is left out, at
each precision (fp32, bf16, fp16 autocast) and memory format (NCHW, channels-last). Ratios are
against fp32 NCHW measured in the same run. With ``--data`` it also times the data loader alone
(images/s at the config's augmentation, for 2 and 8 worker processes), which says whether the loader
or the network bounds a run. ``--profile`` prints the top kernels of one variant (torch.profiler).

    python benchmarks/train_speed.py --config configs/longtail_gpu.yaml --device cuda --profile bf16
    python benchmarks/train_speed.py --config configs/longtail.yaml --device cpu --batch 4 --iters 3 --precisions fp32

Example (tiny, CPU; prints one line per variant):
    >>> main(["--config", "configs/longtail.yaml", "--device", "cpu", "--batch", "1", "--iters", "1",
    ...       "--warmup", "0", "--precisions", "fp32", "--formats", "nchw", "--size", "64"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from wsi_pipeline.benchmarking import PROJECT as ROOT
from wsi_pipeline.config import load_train_config
from wsi_pipeline.device import autocast_dtype, resolve_device
from wsi_pipeline.models.training import build_detector, build_loss, build_optimizer, detector_spec
from wsi_pipeline.taxonomy import load_taxonomy


def random_batch(batch: int, size: int, num_classes: int, device: torch.device, seed: int = 0):
    """``batch`` random images of ``size`` px with 1-3 boxes each (the shapes a training batch has)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (size * 0.7)
        wh = 12 + torch.rand(n, 2, generator=g) * (size * 0.25)
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1).to(device),
                        "labels": torch.randint(2, num_classes, (n,), generator=g).to(device)})
    return images, targets


def build(cfg, device: torch.device, channels_last: bool):
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    criterion = build_loss(cfg.loss.name, len(taxonomy), cfg.loss.params)
    detector = build_detector(detector_spec(cfg, len(taxonomy)), criterion, cfg.model.backbone_weights or None).to(device)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    detector.train()
    return detector, build_optimizer(detector, cfg), len(taxonomy)


def step(detector, optimizer, images, targets, dtype, device) -> None:
    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
        losses = detector(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(cfg, device, precision: str, channels_last: bool, args) -> float:
    """Seconds per training iteration of one variant (after ``args.warmup`` iterations)."""
    detector, optimizer, num_classes = build(cfg, device, channels_last)
    images, targets = random_batch(args.batch, args.size, num_classes, device)
    dtype = autocast_dtype(precision)
    for _ in range(args.warmup):
        step(detector, optimizer, images, targets, dtype, device)
    sync(device)
    started = time.perf_counter()
    for _ in range(args.iters):
        step(detector, optimizer, images, targets, dtype, device)
    sync(device)
    return (time.perf_counter() - started) / args.iters


def profile_variant(cfg, device, precision: str, args) -> str:
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    detector, optimizer, num_classes = build(cfg, device, False)
    images, targets = random_batch(args.batch, args.size, num_classes, device)
    dtype = autocast_dtype(precision)
    for _ in range(max(2, args.warmup)):
        step(detector, optimizer, images, targets, dtype, device)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step(detector, optimizer, images, targets, dtype, device)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=60)


def time_loader(cfg, data: Path, workers: int, batches: int, batch: int) -> float:
    """Images per second the training data loader delivers (augmentation on, no network)."""
    from torch.utils.data import DataLoader, RandomSampler  # noqa: PLC0415

    from wsi_pipeline.models.data import CocoPatchDataset, collate  # noqa: PLC0415

    dataset = CocoPatchDataset(data, augment=cfg.augment)
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset), collate_fn=collate, num_workers=workers)
    started, n = time.perf_counter(), 0
    for i, (images, _) in enumerate(loader):
        n += len(images)
        if i + 1 >= batches:
            break
    return n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "longtail_gpu.yaml")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=0, help="images per iteration (default: the config's)")
    p.add_argument("--size", type=int, default=0, help="image size, px (default: the config's patch_size)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    p.add_argument("--formats", default="nchw,channels_last")
    p.add_argument("--loss", default="", help="classification loss (default: the config's)")
    p.add_argument("--profile", default="", help="precision of a variant to profile (top kernels)")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--data", type=Path, help="a COCO training set: also time the data loader")
    p.add_argument("--json", type=Path, help="write the timings here")
    args = p.parse_args(argv)
    overrides = {"loss": {"name": args.loss}} if args.loss else {}
    cfg = load_train_config(args.config, overrides)
    device = resolve_device(args.device)
    args.batch = args.batch or cfg.schedule.batch_size
    args.size = args.size or cfg.patch_size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"{cfg.model.detector}/{cfg.model.backbone}, {cfg.loss.name} loss, batch {args.batch} x {args.size} px, "
          f"{args.iters} timed iterations after {args.warmup}")
    results = {}
    for precision in [x for x in args.precisions.split(",") if x]:
        if device.type == "cpu" and precision == "fp16":
            continue
        for fmt in [x for x in args.formats.split(",") if x]:
            seconds = time_variant(cfg, device, precision, fmt == "channels_last", args)
            results[f"{precision}/{fmt}"] = seconds
            base = results.get("fp32/nchw")
            ratio = f", {base / seconds:.2f}x fp32 NCHW" if base else ""
            print(f"{precision:>5} {fmt:<13} {seconds * 1000:8.1f} ms/iteration  {args.batch / seconds:8.1f} images/s{ratio}",
                  flush=True)
    if args.data:
        for workers in (2, 8):
            rate = time_loader(cfg, args.data, workers, batches=20, batch=args.batch)
            results[f"loader/{workers}_workers_images_per_s"] = rate
            print(f"data loader, {workers} workers: {rate:.0f} images/s", flush=True)
    if args.profile:
        print(profile_variant(cfg, device, args.profile, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
