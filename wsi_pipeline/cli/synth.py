"""`wsi synth`: synthetic TCT slides with ground truth, and COCO patch datasets for training."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import RESEARCH_NOTICE, HelpFormatter, add_verbosity

EPILOG = """examples:
  wsi synth slide --out demo/ --size 8000 --seed 0
  wsi synth slide --out demo/ --size 8000 --crops ../shared/data/cytology/cell_crops   # real rare cells pasted in
  wsi synth dataset --out train_set/ --slides 3 --size 6000                           # slides + patch dataset
  wsi synth dataset --out cric_set/ --slide field.svs --annotations field.geojson      # any slide + QuPath GeoJSON/COCO
  wsi synth dataset --out set/ --slide a.svs --annotations a.geojson --slide b.svs --annotations b.json --target-mpp 0.5

Writes <name>.svs (pyramidal JPEG BigTIFF, Aperio-style), <name>.cells.geojson (QuPath),
<name>.coco.json and <name>.truth.json; datasets get images/, annotations.json, class_counts.csv.
See docs/synth.md.

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="make synthetic TCT slides with ground truth, or cut training datasets",
                       description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    inner = p.add_subparsers(dest="synth_command", metavar="WHAT", required=True)

    s = inner.add_parser("slide", help="write one synthetic slide and its ground truth", epilog=EPILOG,
                         formatter_class=HelpFormatter)
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--size", type=int, default=8000, help="slide width and height, px (1024-200000)")
    s.add_argument("--seed", type=int, default=0, help="same seed, same slide")
    s.add_argument("--mpp", type=float, default=None, help="um/px of level 0 (default: configs/synth.yaml, 0.25)")
    s.add_argument("--crops", type=Path, default=None, help="folder of real crops <k>/*.jpg: composited mode")
    s.add_argument("--name", default=None, help="file name stem (default synth_s<seed>_<size>)")
    s.add_argument("--config", type=Path, default=None, help="YAML overriding configs/synth.yaml")
    add_verbosity(s)
    s.set_defaults(func=run_slide)

    d = inner.add_parser("dataset", help="cut a COCO patch dataset from slides + annotations (or new synthetic slides)",
                         epilog=EPILOG, formatter_class=HelpFormatter)
    d.add_argument("--out", required=True, type=Path, help="dataset folder")
    d.add_argument("--slide", action="append", type=Path, default=[], help="a slide (repeat, one per --annotations)")
    d.add_argument("--annotations", action="append", type=Path, default=[],
                   help="its GeoJSON (QuPath export) or COCO JSON, level-0 px")
    d.add_argument("--slides", type=int, default=2, help="without --slide: synthetic slides to generate")
    d.add_argument("--size", type=int, default=6000, help="without --slide: size of each synthetic slide, px")
    d.add_argument("--crops", type=Path, default=None, help="without --slide: composited mode with these crops")
    d.add_argument("--mpp", type=float, default=None, help="um/px of the given slides when the files lack it")
    d.add_argument("--target-mpp", type=float, default=None, help="um/px of the patches (default 0.5)")
    d.add_argument("--patch-size", type=int, default=None, help="patch edge, px (default 512)")
    d.add_argument("--background-ratio", type=float, default=None,
                   help="normal-only patches kept per patch with a rare cell (default 1.0)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--config", type=Path, default=None, help="YAML overriding configs/synth.yaml")
    add_verbosity(d)
    d.set_defaults(func=run_dataset)
    p.set_defaults(func=lambda args: p.print_help())
    return p


def run_slide(args: argparse.Namespace) -> int:
    from ..synth import generate_slide
    from ..synth.config import load_synth_config

    cfg = load_synth_config(args.config)
    s = generate_slide(args.out, args.size, seed=args.seed, mpp=args.mpp or cfg.slide.mpp, config=cfg,
                       crops_dir=args.crops, name=args.name)
    print(f"slide:        {s.slide_path}")
    print(f"ground truth: {s.geojson_path}, {s.coco_path.name}, {s.truth_path.name}")
    print(f"cells:        {', '.join(f'{k} {v}' for k, v in s.counts.items())}")
    print(f"most severe:  {s.most_severe}")
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    from ..synth import extract_dataset, make_training_set
    from ..synth.config import load_synth_config

    if len(args.slide) != len(args.annotations):
        raise ConfigError(None, f"give one --annotations per --slide ({len(args.slide)} slides, {len(args.annotations)} annotation files)")
    if args.slide:
        summary = extract_dataset(list(zip(args.slide, args.annotations)), args.out, args.target_mpp, args.patch_size,
                                  args.background_ratio, args.seed, load_synth_config(args.config), slide_mpp=args.mpp)
    else:
        if args.slides < 1:
            raise ConfigError(None, "--slides must be at least 1")
        summary = make_training_set(args.out, args.slides, args.size, args.crops, args.target_mpp, args.patch_size,
                                    args.seed, args.background_ratio, args.config, progress=True)
    print(summary.table())
    print(f"dataset: {summary.annotations_path} ({summary.n_images} patches: {summary.n_rare_patches} with rare cells, "
          f"{summary.n_background_patches} normal-only); counts in {summary.counts_path.name}")
    return 0
