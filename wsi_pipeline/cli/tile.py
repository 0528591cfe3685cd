"""`wsi tile SLIDE --out DIR`: cut the slide's cell-bearing area into patches (DIR/patches.zarr + DIR/mask.png)."""

from __future__ import annotations

import argparse

from ..config import check_scheduler, check_workers_mpp, load_config
from ..locking import stage_lock
from ..tiling import tile_slide
from .common import HelpFormatter

EPILOG = """examples:
  wsi tile slide.svs --out work/slide
  wsi tile slide.svs --out work/slide --target-mpp 0.5 --patch-size 512 --overlap 128
  wsi tile slide.svs --out work/slide --scheduler threads --workers 2
  wsi tile slide.svs --out work/slide --scheduler tcp://10.0.0.5:8786   # an existing Dask cluster
  wsi tile field.jpg --out work/field --mpp 0.25                       # a plain image needs --mpp

Rerunning the same command reuses a complete store, or finishes an interrupted one. A store made from a
different slide or with different settings is never reused: the command stops, or rebuilds it with --force.
Store layout: docs/store.md.
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("tile", help="cut a slide into a zarr patch store", description=__doc__, epilog=EPILOG,
                       formatter_class=HelpFormatter)
    p.add_argument("slide", help="slide file, or a plain image with --mpp")
    p.add_argument("--out", required=True, help="output folder (gets patches.zarr and mask.png)")
    p.add_argument("--config", default=None, help="YAML config; its 'tiling' section is used (default: configs/default.yaml)")
    p.add_argument("--mpp", type=float, default=None, help="um per pixel at full resolution (overrides the file)")
    p.add_argument("--target-mpp", type=float, default=None, help="patch resolution in um/px (config: tiling.target_mpp)")
    p.add_argument("--patch-size", type=int, default=None, help="patch side in px at target mpp (config: tiling.patch_size)")
    p.add_argument("--overlap", type=int, default=None, help="overlap between neighbours in px (config: tiling.overlap)")
    p.add_argument("--codec", choices=["jpeg", "zstd", "none"], default=None, help="patch compression (config: tiling.codec)")
    p.add_argument("--scheduler", default=None,
                   help="threads | processes | synchronous | distributed (local cluster) | tcp://HOST:PORT (config: tiling.scheduler)")
    p.add_argument("--workers", type=int, default=None, help="parallel workers, 0 = all cores (config: tiling.workers)")
    p.add_argument("--force", action="store_true", help="rebuild a store made from another slide or other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    check_options(args)
    changes = {"target_mpp": args.target_mpp, "patch_size": args.patch_size, "overlap": args.overlap,
               "codec": args.codec, "scheduler": args.scheduler, "workers": args.workers}
    overrides = {"tiling": {k: v for k, v in changes.items() if v is not None}}
    cfg = load_config(args.config, overrides=overrides).tiling
    with stage_lock(args.out):  # one worker per output folder (docs/workflows.md)
        result = tile_slide(args.slide, args.out, cfg, mpp=args.mpp, progress=not args.no_progress, force=args.force)
    state = "reused (already complete)" if result.reused else f"written in {result.seconds:.1f} s"
    print(f"{result.n_patches} of {result.n_grid} patches {state}: {result.store_path}")
    print(f"kept area {result.kept_area_mm2:.2f} mm2 ({100 * result.kept_fraction:.0f}% of the slide); "
          f"cell area {result.cell_area_mm2:.2f} mm2; mask {result.mask_path}")
    return 0




def check_options(args: argparse.Namespace) -> None:
    """Command-line values, checked before any work; errors name the option (exit status 2)."""
    if args.scheduler is not None:
        check_scheduler(args.scheduler, key="--scheduler")
    check_workers_mpp(args.workers, args.mpp)

