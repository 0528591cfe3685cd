"""`wsi data`: turn real annotations into training sets at the model's resolution.

  composite  real labelled crops pasted onto real backgrounds, with negatives pasted the same way
             (configs/starter_data.yaml; how and why: docs/training.md)
  build      patches + boxes cut from annotated slides or images (QuPath GeoJSON, ASAP XML - e.g. a
             corrected `wsi report` export - or COCO JSON)
  negatives  hard negatives: patches of a model's top abnormal calls on slides signed out NILM
             (finished `wsi-run` folders); no cell has to be drawn
  preview    an HTML contact sheet of a set, boxes drawn: check they lie on their cells before training
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import RESEARCH_NOTICE, HelpFormatter

EPILOG = """examples:
  wsi data composite configs/starter_data.yaml --out data/starter                 # train/ and test/ sets
  wsi data composite configs/starter_data.yaml --out data/small --images 200 --split train
  wsi data build --out data/lab --slide a.svs --annotations a.geojson --slide b.svs --annotations b.xml
  wsi data build --out data/fields --slide field.jpg --annotations field.geojson --mpp 0.3 --target-mpp 0.5
  wsi data build --out data/cric --folder ../shared/data/cytology/cric --mpp 0.3 --target-mpp 0.5  # a.webp + a.geojson ...
  wsi-run nilm_slides/ --out results/nilm && wsi data negatives results/nilm --out data/lab_negatives --top 200
  wsi train configs/finetune.yaml --data data/lab --data data/lab_negatives --out runs/lab   # train with both
  wsi data preview data/lab                      # data/lab/preview.html: 200 patches, boxes drawn
  wsi data preview data/lab --class HSIL --max-images 50

Each set gets images/ and annotations.json (COCO, taxonomy classes, written last); train with
`wsi train CONFIG --data DIR`.

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help="make training sets from real annotations (composited crops, annotated slides)",
                       description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    inner = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    c = inner.add_parser("composite", help="paste real labelled crops onto real backgrounds",
                         formatter_class=HelpFormatter, epilog=EPILOG)
    c.add_argument("config", type=Path, help="composite-set YAML (see configs/starter_data.yaml)")
    c.add_argument("--out", required=True, type=Path, help="output folder; gets <split>/ per split")
    c.add_argument("--split", choices=["train", "test", "both"], default="both", help="which split to write")
    c.add_argument("--images", type=int, default=None, help="images per split (overrides the config's images)")
    c.add_argument("--test-images", type=int, default=None, help="images of the test split (default: a quarter of --images)")
    c.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    c.set_defaults(func=run_composite)
    b = inner.add_parser("build", help="cut a patch set from annotated slides or images", formatter_class=HelpFormatter,
                         epilog=EPILOG)
    b.add_argument("--out", required=True, type=Path, help="dataset folder")
    b.add_argument("--slide", action="append", type=Path, default=[],
                   help="a slide or image (repeat, one per --annotations)")
    b.add_argument("--annotations", action="append", type=Path, default=[],
                   help="its annotations: QuPath GeoJSON, ASAP XML or COCO JSON, in level-0 pixels")
    b.add_argument("--folder", action="append", type=Path, default=[],
                   help="every slide or image in this folder with annotations of the same name beside it "
                        "(a.svs + a.geojson, b.tif + b.xml, ...)")
    b.add_argument("--mpp", type=float, default=None, help="um/px of the given slides when the files lack it (images)")
    b.add_argument("--target-mpp", type=float, default=None, help="um/px of the patches (default: configs/synth.yaml dataset)")
    b.add_argument("--patch-size", type=int, default=None, help="patch edge, px")
    b.add_argument("--background-ratio", type=float, default=None, help="normal-only patches kept per patch with a rare cell")
    b.add_argument("--seed", type=int, default=0, help="random seed of the background patch sample")
    b.add_argument("--annotated-classes", default=None,
                   help="comma-separated classes the annotations mark on every cell of theirs, when they cover only "
                        "some (e.g. NILM,ASC-US,LSIL,ASC-H,HSIL,SCC for CRIC); training does not teach the other "
                        "classes as background on these patches (default: all classes)")
    b.add_argument("--config", type=Path, default=None, help="YAML overriding configs/synth.yaml (label aliases, dataset)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    b.set_defaults(func=run_build)
    n = inner.add_parser("negatives", help="hard negatives from a model's top calls on slides signed out NILM",
                         formatter_class=HelpFormatter, epilog=EPILOG)
    n.add_argument("results", nargs="+", type=Path,
                   help="finished `wsi-run` slide folders, or batch output folders holding them, of slides "
                        "signed out as negative (NILM): every abnormal call on them is a false positive")
    n.add_argument("--out", required=True, type=Path, help="dataset folder")
    n.add_argument("--top", type=int, default=100, help="patches per slide: its most suspicious calls, one per patch")
    n.add_argument("--min-score", type=float, default=0.0, help="leave out calls whose best abnormal score is not above this (default 0: any abnormal score)")
    n.add_argument("--target-mpp", type=float, default=None, help="um/px of the patches (default: the model's)")
    n.add_argument("--patch-size", type=int, default=None, help="patch edge, px (default: the model's)")
    n.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    n.set_defaults(func=run_negatives)
    v = inner.add_parser("preview", help="HTML contact sheet of a patch set, boxes drawn", formatter_class=HelpFormatter,
                         epilog=EPILOG)
    v.add_argument("dataset", type=Path, help="patch-set folder (images/ + annotations.json)")
    v.add_argument("--out", type=Path, default=None, help="HTML file (default: DATASET/preview.html)")
    v.add_argument("--max-images", type=int, default=200, help="patches shown, evenly spaced over the set")
    v.add_argument("--class", dest="class_name", default=None, help="only patches holding a box of this class")
    v.set_defaults(func=run_preview)
    return p


def run_composite(args: argparse.Namespace) -> int:
    from ..datasets.composite import build_composite_set, load_composite_config  # noqa: PLC0415

    over: dict = {}
    if args.seed is not None:
        over["seed"] = args.seed
    cfg = load_composite_config(args.config, over)
    splits = ["train", "test"] if args.split == "both" else [args.split]
    for split in splits:
        images = args.images if args.images is not None else cfg.images
        if split == "test":
            images = args.test_images if args.test_images is not None else max(1, images // 4)
        cfg.images = images
        summary = build_composite_set(cfg, args.out / split, split, progress=not args.no_progress)
        print(f"{split}: {summary.out_dir / 'annotations.json'} ({summary.n_images} images)")
        print(summary.table())
    return 0


def run_build(args: argparse.Namespace) -> int:
    from ..datasets.slides import extract_dataset  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415

    from ..datasets.slides import annotated_pairs  # noqa: PLC0415

    if len(args.slide) != len(args.annotations):
        raise ConfigError(None, "give one --annotations file per --slide")
    pairs = list(zip(args.slide, args.annotations)) + [pair for folder in args.folder for pair in annotated_pairs(folder)]
    if not pairs:
        raise ConfigError(None, "nothing to build from: give --slide/--annotations pairs or --folder")
    annotated = [c.strip() for c in args.annotated_classes.split(",") if c.strip()] if args.annotated_classes else None
    summary = extract_dataset(pairs, args.out, args.target_mpp, args.patch_size,
                              args.background_ratio, args.seed, args.config, slide_mpp=args.mpp,
                              progress=not args.no_progress, annotated_classes=annotated)
    print(f"dataset: {summary.annotations_path} ({summary.n_images} patches)")
    print(summary.table())
    return 0


def run_negatives(args: argparse.Namespace) -> int:
    from ..datasets.negatives import mine_negatives  # noqa: PLC0415

    summary = mine_negatives(args.results, args.out, args.top, args.target_mpp, args.patch_size, args.min_score,
                             progress=not args.no_progress)
    print(f"hard negatives: {summary.annotations_path} ({summary.n_images} patches, no boxes; "
          f"annotated classes: the abnormal ones)")
    print(summary.table())
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from ..datasets.preview import render_preview  # noqa: PLC0415

    summary = render_preview(args.dataset, args.out, args.max_images, args.class_name)
    print(f"preview: {summary.path} ({summary.n_shown} of {summary.n_candidates} patches"
          f"{f' with {args.class_name}' if args.class_name else ''}; the set has {summary.n_total})")
    return 0
