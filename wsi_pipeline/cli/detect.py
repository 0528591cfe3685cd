"""`wsi detect`: find cells in every patch of a patch store with a trained detector."""

from __future__ import annotations

import argparse
import logging
from .common import RESEARCH_NOTICE, HelpFormatter

log = logging.getLogger(__name__)

EPILOG = """examples:
  wsi detect work/slide/patches.zarr --model model.pt --out work/slide
  wsi detect work/slide/patches.zarr --model model.pt --out work/slide --device cuda:1 --batch-size 32
  wsi detect work/slide/patches.zarr --model model.pt --out work/slide --config my.yaml --device cpu

Writes OUT/detections.parquet (level-0 boxes, class, score, per-class scores; see docs/inference.md).
An interrupted run keeps its finished batches in OUT/detections.partial/: run the same command
again to continue. The model's resolution and patch size must match the store's.

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "detect", help="detect cells in a patch store with a trained model",
        description="Run a trained detector over every patch of a patch store (from `wsi tile`) and write one "
                    "table of cell detections in slide coordinates, with tile-overlap duplicates merged.",
        epilog=EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("store", help="patch store folder (patches.zarr) written by `wsi tile`")
    p.add_argument("--model", required=True, help="detector checkpoint (.pt) from `wsi train`")
    p.add_argument("--out", required=True, help="output folder for detections.parquet")
    p.add_argument("--config", help="pipeline YAML; only its `inference:` section is used")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: inference.device of the config)")
    p.add_argument("--batch-size", type=int, help="patches per forward pass; 0 = chosen from device memory")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16", "int8"], help="default: inference.precision")
    p.add_argument("--score-threshold", type=float, help="lowest score kept in the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for log files)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import check_device, load_config
    from ..inference import detect_store
    from ..locking import stage_lock

    overrides = {"device": args.device, "batch_size": args.batch_size, "precision": args.precision,
                 "score_threshold": args.score_threshold}
    given = {k: v for k, v in overrides.items() if v is not None}
    if args.device is not None:
        check_device(args.device, key="--device")
    cfg = load_config(args.config, overrides={"inference": given}).inference  # validated like the YAML
    with stage_lock(args.out):  # one worker per output folder (docs/workflows.md)
        result = detect_store(args.store, args.model, args.out, cfg, progress=not args.no_progress)
    log.info(
        "%d cells detected in %d patches (%d processed now, %.1f patches/s, %.0f%% of the time waiting for data)",
        result.n_detections, result.n_patches, result.patches_run, result.patches_per_second,
        100 * result.data_wait_fraction,
    )
    print(result.detections_path)
    return 0
