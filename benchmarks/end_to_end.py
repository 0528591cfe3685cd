"""`wsi-run` end to end, by stage, on one large slide of real TCT cells (the real-cells issue's speed check).

Builds once (cached) a JPEG pyramidal slide of SIZE x SIZE px at 0.5 um/px from mirrored copies of the
real field ``../shared/data/cytology/lbc_field.jpg``, resampled from its estimated 0.27 um/px so its cells
keep their physical size, then runs ``wsi-run`` on it with the bundled starter model (or ``--model``) and
prints the stage times that the slide's ``report.json`` records (tiling, detection, report), the patch
count, patches/s and the wall time of the whole command. Baseline, measured in the same run: the detector
alone on patches already in memory, on the same device with the run's precision and batch size. The
ratio says how close the detection stage (store reading, merging, writing) comes to the model's own
rate. Cells fill the whole slide, so the tissue mask keeps almost every patch: a worst case for patch
count (a real slide keeps ~60%).

    python benchmarks/end_to_end.py --size 60000 --device cuda     # the GPU machine, all cores (minutes)
    python benchmarks/end_to_end.py --size 4096 --device cpu       # a quick check on any machine

Run it alone: the tiling stage uses every core (``--workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wsi_pipeline.benchmarking import PROJECT as ROOT
from wsi_pipeline.benchmarking.images import SLIDE_MPP, field_patches, mirrored_field_slide as make_slide
from wsi_pipeline.inference.device import plan_device
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import load_checkpoint


@dataclass
class StageTimes:
    slide_px: int
    patches: int
    tiling_s: float
    detection_s: float
    report_s: float
    wall_s: float
    device: str
    precision: str
    batch_size: int
    score_threshold: float

    @property
    def patches_per_s(self) -> float:
        return self.patches / self.detection_s if self.detection_s else float("nan")


def model_alone_rate(model: Path | None, device: str, precision: str, batch: int, patches: torch.Tensor,
                     score_threshold: float) -> float:
    """Patches/s of the detector alone on ``patches`` already on the device (one warm-up batch first)."""
    plan = plan_device(device, precision, batch, patches.shape[1])
    detector = load_checkpoint(model or starter_model_path()).detector.to(plan.device).eval()
    images = patches.to(plan.device)

    def predict(part: torch.Tensor) -> None:
        with torch.inference_mode(), plan.autocast():
            detector.predict(part, score_threshold=score_threshold)

    predict(images[:batch])
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        predict(images[start:start + batch])
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
    return len(images) / (time.perf_counter() - started)


def stage_times(report_json: Path, slide_px: int, wall_s: float) -> StageTimes:
    """Stage times, patch count and inference settings from a slide's report.json."""
    report = json.loads(report_json.read_text())
    timings, inference = report["timings"], report["inference"]
    return StageTimes(slide_px=slide_px, patches=int(report["tiling"]["n_patches"]), tiling_s=timings["tiling_s"],
                      detection_s=timings["detection_s"], report_s=timings["report_s"], wall_s=round(wall_s, 1),
                      device=inference["device"], precision=inference["precision"], batch_size=inference["batch_size"],
                      score_threshold=inference["score_threshold"])


def run_pipeline(slide: Path, slide_px: int, out: Path, device: str, workers: int, model: Path | None) -> StageTimes:
    """``wsi-run`` as a user runs it (a fresh process), timed from outside. The slide's earlier output is
    deleted first: wsi-run would otherwise reuse its finished patch store and detections."""
    shutil.rmtree(out / slide.stem, ignore_errors=True)
    command = [sys.executable, "-m", "wsi_pipeline.cli.run", str(slide), "--out", str(out), "--device", device,
               "--workers", str(workers), "--no-progress"]
    if model is not None:
        command += ["--model", str(model)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return stage_times(out / slide.stem / "report.json", slide_px, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=60000, help="slide width = height in px at 0.5 um/px")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tiling workers (default: all cores)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled starter model)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsi_end_to_end",
                   help="where the slide and outputs go (default: wsi_end_to_end in the system's temporary folder)")
    p.add_argument("--baseline-patches", type=int, default=0,
                   help="patches for the model-alone baseline (default: 16 batches on a GPU, 64 patches on the CPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    slide = make_slide(args.size, args.cache)
    times = run_pipeline(slide, args.size, args.cache / "out", args.device, args.workers, args.model)
    n_baseline = args.baseline_patches or (16 * times.batch_size if times.device == "cuda" else 64)
    alone = model_alone_rate(args.model, times.device, times.precision, times.batch_size, field_patches(n_baseline),
                             times.score_threshold)
    mm = args.size * SLIDE_MPP / 1000
    print(f"\n`wsi-run` on a {args.size:,} x {args.size:,} px slide ({mm:.0f} x {mm:.0f} mm at {SLIDE_MPP} um/px), "
          f"{times.patches:,} patches, {args.workers} tiling workers, {times.device} {times.precision} batch {times.batch_size}:")
    print(f"  tiling     {times.tiling_s:8.1f} s  ({times.patches / times.tiling_s:,.0f} patches/s)")
    print(f"  detection  {times.detection_s:8.1f} s  ({times.patches_per_s:,.1f} patches/s)")
    print(f"             baseline, the detector alone on {n_baseline} patches in memory: {alone:,.1f} patches/s; "
          f"detection stage / detector alone: {times.patches_per_s / alone:.2f}x")
    print(f"  report     {times.report_s:8.1f} s")
    print(f"  wall       {times.wall_s:8.1f} s  (the whole command, start-up included)")
    if args.json:
        args.json.write_text(json.dumps({**asdict(times), "model_alone_patches_per_s": round(alone, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
