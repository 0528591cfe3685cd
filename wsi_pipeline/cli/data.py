"""`wsi data`: turn real annotations into training sets at the model's resolution.

  composite  real labelled crops pasted onto real backgrounds, with negatives pasted the same way
             (configs/starter_data.yaml; how and why: docs/training.md)
  build      patches + boxes cut from annotated slides or images (QuPath GeoJSON boxes or points, ASAP
             XML - e.g. a corrected `wsi report` export -, COCO JSON, a point CSV, or a review.geojson
             saved from `wsi review`: confirmed/corrected cells as boxes, rejected calls as hard negatives)
  split      a train / validation split by field, written once and committed (cells of a field never
             on both sides)
  negatives  hard negatives: patches of a model's top abnormal calls on slides signed out NILM
             (finished `wsi-run` folders); no cell has to be drawn
  annotated-negatives
             hard negatives from annotated fields: a model's confident calls far from every annotated cell
  crops      labelled cell crops (a crop index CSV) laid out as training patches, for rare classes
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
  wsi data build --out data/lab_reviewed --slide a.svs --annotations results/a/review.geojson   # a reviewed slide (wsi review)
  wsi data build --out data/lab_reviewed --folder results/   # every reviewed slide folder of a wsi-run batch
  wsi data build --out data/cric_train --points ../shared/data/cytology/cric_fields/cells.csv --mpp-table ../shared/data/cytology/cric_fields/fields.csv --split configs/splits/cric.csv --side train
  wsi data split --cells ../shared/data/cytology/cric_fields/cells.csv --cells ../shared/data/cytology/cric_cells/index.csv --out configs/splits/cric.csv
  wsi-run nilm_slides/ --out results/nilm && wsi data negatives results/nilm --out data/lab_negatives --top 200
  wsi data annotated-negatives --model starter --points ../shared/data/cytology/cric_fields/cells.csv --mpp-table ../shared/data/cytology/cric_fields/fields.csv --split configs/splits/cric.csv --out data/cric_neg
  wsi data crops ../shared/data/cytology/cric_cells/index.csv --mpp 0.30 --split configs/splits/cric.csv --out data/cric_mosaics --images 300
  wsi train configs/finetune.yaml --data data/lab --data data/lab_negatives --out runs/lab   # train with both
  wsi data preview data/lab                      # data/lab/preview.html: 200 patches, boxes drawn
  wsi data preview data/lab --class HSIL --max-images 50

Each set gets images/ and annotations.json (COCO, taxonomy classes, written last); train with
`wsi train CONFIG --data DIR`.

""" + RESEARCH_NOTICE


def _add_annotated_inputs(p: argparse.ArgumentParser) -> None:
    """The ways to name annotated slides or images, shared by ``build`` and ``annotated-negatives``."""
    p.add_argument("--slide", action="append", type=Path, default=[],
                   help="a slide or image (repeat, one per --annotations)")
    p.add_argument("--annotations", action="append", type=Path, default=[],
                   help="its annotations: QuPath GeoJSON (boxes or points), ASAP XML, COCO JSON, a point CSV, or "
                        "the slide's review.geojson (wsi review), in level-0 pixels")
    p.add_argument("--folder", action="append", type=Path, default=[],
                   help="every slide or image in this folder with annotations of the same name beside it "
                        "(a.svs + a.geojson, b.tif + b.xml, ...), or every reviewed slide folder (review.geojson) "
                        "of a wsi-run output folder")
    p.add_argument("--points", action="append", type=Path, default=[],
                   help="a point CSV (image, x, y, label per row) of many images; each image it names is "
                        "looked up beside it (or in --images)")
    p.add_argument("--images", type=Path, default=None, help="folder of the images a --points CSV names")
    p.add_argument("--mpp", type=float, default=None, help="um/px of the given slides when the files lack it (images)")
    p.add_argument("--mpp-table", type=Path, default=None,
                   help="CSV of um/px per image (columns image and mpp or mpp_estimate), for images whose files lack it")
    p.add_argument("--split", type=Path, default=None, help="a split file (wsi data split): keep only the fields of --side")
    p.add_argument("--side", choices=["train", "val"], default="train", help="which side of --split to use")
    p.add_argument("--annotated-classes", default=None,
                   help="comma-separated classes the annotations mark on every cell of theirs, when they cover only "
                        "some (e.g. NILM,ASC-US,LSIL,ASC-H,HSIL,SCC for CRIC); training does not teach the other "
                        "classes as background on these patches (default: all classes)")


def _annotated_inputs(args: argparse.Namespace):
    """``(pairs, slide_mpp, annotated_classes)`` from the options of :func:`_add_annotated_inputs`."""
    from ..datasets.slides import annotated_pairs, point_csv_pairs, read_mpp_table  # noqa: PLC0415
    from ..datasets.split import read_split  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415

    if len(args.slide) != len(args.annotations):
        raise ConfigError(None, "give one --annotations file per --slide")
    if args.mpp is not None and args.mpp_table is not None:
        raise ConfigError(None, "give --mpp or --mpp-table, not both")
    pairs = (list(zip(args.slide, args.annotations)) + [pair for folder in args.folder for pair in annotated_pairs(folder)]
             + [pair for points in args.points for pair in point_csv_pairs(points, args.images)])
    if args.split is not None:
        split = read_split(args.split)
        pairs = [p for p in pairs if split.side(p[0]) == args.side]
    if not pairs:
        raise ConfigError(None, "nothing to read: give --slide/--annotations pairs, --folder or --points")
    annotated = [c.strip() for c in args.annotated_classes.split(",") if c.strip()] if args.annotated_classes else None
    return pairs, read_mpp_table(args.mpp_table) if args.mpp_table else args.mpp, annotated


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
    _add_annotated_inputs(b)
    b.add_argument("--point-box-um", type=float, default=None,
                   help="side of the square box a point annotation becomes, um (default: configs/synth.yaml, 20)")
    b.add_argument("--skip-unknown-labels", action="store_true",
                   help="skip annotations whose label is not a taxonomy class or alias (default: refuse the file)")
    b.add_argument("--target-mpp", type=float, default=None, help="um/px of the patches (default: configs/synth.yaml dataset)")
    b.add_argument("--patch-size", type=int, default=None, help="patch edge, px")
    b.add_argument("--background-ratio", type=float, default=None, help="normal-only patches kept per patch with a rare cell")
    b.add_argument("--seed", type=int, default=0, help="random seed of the background patch sample")
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
    sp = inner.add_parser("split", help="a train / validation split by field, from point CSVs of labelled cells",
                          formatter_class=HelpFormatter, epilog=EPILOG)
    sp.add_argument("--cells", action="append", type=Path, required=True,
                    help="a CSV with the columns image and label, one row per labelled cell (repeat)")
    sp.add_argument("--out", required=True, type=Path, help="split CSV to write (commit it)")
    sp.add_argument("--val-fraction", type=float, default=0.25, help="share of the fields on the validation side")
    sp.add_argument("--min-val-cells", type=int, default=30,
                    help="cells of every class on the validation side (a third of a class with fewer than 3x as many)")
    sp.add_argument("--seed", type=int, default=0, help="first seed tried; the one used is printed")
    sp.set_defaults(func=run_split)
    a = inner.add_parser("annotated-negatives", help="hard negatives: a model's confident calls far from every "
                         "annotated cell of annotated fields", formatter_class=HelpFormatter, epilog=EPILOG)
    _add_annotated_inputs(a)
    a.add_argument("--model", default="starter", help="checkpoint whose calls are mined (default: the bundled starter)")
    a.add_argument("--out", required=True, type=Path, help="dataset folder")
    a.add_argument("--far-um", type=float, default=20.0, help="a call counts as far when its centre is farther than "
                   "this from every annotated cell, um")
    a.add_argument("--min-score", type=float, default=0.3, help="leave out calls whose best abnormal score is not above this")
    a.add_argument("--top", type=int, default=5, help="patches per image: its most confident far calls, one per patch")
    a.add_argument("--point-box-um", type=float, default=20.0, help="box side of point annotations in the patches, um")
    a.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    a.set_defaults(func=run_annotated_negatives)
    cr = inner.add_parser("crops", help="labelled cell crops laid out as training patches (crop mosaics)",
                          formatter_class=HelpFormatter, epilog=EPILOG)
    cr.add_argument("index", type=Path, help="crop index CSV: file, image, label, nucleus_x, nucleus_y")
    cr.add_argument("--mpp", required=True, type=float, help="um/px of the crops")
    cr.add_argument("--out", required=True, type=Path, help="dataset folder")
    cr.add_argument("--split", type=Path, default=None, help="a split file: only crops of --side's fields")
    cr.add_argument("--side", choices=["train", "val"], default="train", help="which side of --split to use")
    cr.add_argument("--images", type=int, default=250, help="patches to write")
    cr.add_argument("--grid", type=int, default=4, help="crops per patch side")
    cr.add_argument("--target-mpp", type=float, default=0.5, help="um/px of the patches")
    cr.add_argument("--patch-size", type=int, default=256, help="patch edge, px")
    cr.add_argument("--point-box-um", type=float, default=20.0, help="box side around each nucleus, um")
    cr.add_argument("--annotated-classes", default=None, help="comma-separated classes the index marks completely "
                    "(default: all classes)")
    cr.add_argument("--seed", type=int, default=0, help="random seed of the crop draw")
    cr.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    cr.set_defaults(func=run_crops)
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

    from ..synth.config import load_synth_config  # noqa: PLC0415 - the whole file is checked, as before

    pairs, mpp, annotated = _annotated_inputs(args)
    summary = extract_dataset(pairs, args.out, args.target_mpp, args.patch_size,
                              args.background_ratio, args.seed, load_synth_config(args.config), slide_mpp=mpp,
                              progress=not args.no_progress, annotated_classes=annotated,
                              point_box_um=args.point_box_um, strict_labels=not args.skip_unknown_labels)
    print(f"dataset: {summary.annotations_path} ({summary.n_images} patches from {len(pairs)} images"
          f"{f', {args.side} side of {args.split}' if args.split else ''})")
    if summary.review:
        print(summary.review_line())
    print(summary.table())
    return 0


def run_annotated_negatives(args: argparse.Namespace) -> int:
    from ..datasets.negatives import mine_annotated_negatives  # noqa: PLC0415

    pairs, mpp, annotated = _annotated_inputs(args)
    summary = mine_annotated_negatives(args.model, pairs, args.out, args.far_um, args.min_score, args.top, mpp,
                                       annotated, args.point_box_um, progress=not args.no_progress)
    print(f"hard negatives: {summary.annotations_path} ({summary.n_images} patches centred on calls above "
          f"{args.min_score} farther than {args.far_um} um from every annotated cell, from {len(pairs)} images)")
    print(summary.table())
    return 0


def run_crops(args: argparse.Namespace) -> int:
    from ..datasets.crop_mosaic import build_crop_mosaics, read_crop_index  # noqa: PLC0415
    from ..datasets.split import read_split  # noqa: PLC0415

    crops = read_crop_index(args.index, read_split(args.split) if args.split else None, args.side)
    annotated = [c.strip() for c in args.annotated_classes.split(",") if c.strip()] if args.annotated_classes else None
    summary = build_crop_mosaics(crops, args.out, args.mpp, args.images, args.grid, args.target_mpp, args.patch_size,
                                 args.point_box_um, annotated, args.seed, progress=not args.no_progress)
    print(f"crop mosaics: {summary.annotations_path} ({summary.n_images} patches from {len(crops)} crops"
          f"{f', {args.side} side of {args.split}' if args.split else ''})")
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


def run_split(args: argparse.Namespace) -> int:
    from ..datasets.split import split_from_point_csvs  # noqa: PLC0415

    split = split_from_point_csvs(args.cells, args.out, args.val_fraction, args.seed, args.min_val_cells)
    print(f"split: {args.out} ({len(split.fields('train'))} training fields, {len(split.fields('val'))} validation "
          f"fields, seed {split.seed})")
    print(split.table())
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from ..datasets.preview import render_preview  # noqa: PLC0415

    summary = render_preview(args.dataset, args.out, args.max_images, args.class_name)
    print(f"preview: {summary.path} ({summary.n_shown} of {summary.n_candidates} patches"
          f"{f' with {args.class_name}' if args.class_name else ''}; the set has {summary.n_total})")
    return 0
