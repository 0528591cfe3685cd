"""`wsi evaluate`: COCO mAP, per-class AP and rare-class mAP of a model on a patch dataset; or, with
--cells, nucleus hits of a slide's detections against annotated cells (real fields, CRIC-style points),
or the ranking of cells a reader circled (--circles)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .common import RESEARCH_NOTICE, HelpFormatter

EPILOG = """examples:
  wsi evaluate runs/demo/model.pt demo_out/dataset
  wsi evaluate model.pt data/longtail/test --json results/eval.json --batch-size 16
  wsi evaluate --cells out/field1/detections.parquet --truth field1.geojson \
               --cells out/field2/detections.parquet --truth field2.geojson     # pooled over fields
  wsi evaluate --cells out/field1/detections.parquet --circles field1_circles.geojson   # reader's circles

Nucleus-hit mode (--cells): a truth cell is found when a detection that counts at the report
thresholds (configs/default.yaml report section, or --config) contains its centre. Prints per-class
recall, abnormal recall (found by any abnormal class) and the fraction of NILM nuclei flagged abnormal.

Circled-cell mode (--circles, one file per --cells): every shape in the file, whatever its label, is a
cell a reader circled as abnormal; other cells are unlabelled. Per field: is the most suspicious
detection (highest abnormal score) in a circle, the rank of the most suspicious detection in a circle,
and the counted abnormal detections outside every circle.

Prints a per-class AP table (AP over IoU .50:.95 and AP at IoU .50); classes marked * are the
abnormal (rare) classes of the taxonomy, whose mean AP is reported separately. The same numbers
go to the JSON file (default: evaluation.json next to the checkpoint).

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="COCO mAP and per-class AP of a model on a patch dataset",
                       description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="model checkpoint written by `wsi train` (model.pt)")
    p.add_argument("dataset", nargs="?", help="COCO patch dataset folder (images/ + annotations.json)")
    p.add_argument("--cells", action="append", type=Path, default=[], metavar="DETECTIONS",
                   help="nucleus-hit mode: a detections.parquet (repeat, one per --truth)")
    p.add_argument("--truth", action="append", type=Path, default=[],
                   help="annotated cells for --cells: GeoJSON, ASAP XML or COCO, level-0 px")
    p.add_argument("--circles", action="append", type=Path, default=[],
                   help="circled-cell mode: shapes a reader drew around abnormal cells for --cells (GeoJSON, ASAP XML)")
    p.add_argument("--config", type=Path, default=None, help="pipeline YAML whose report thresholds apply (--cells)")
    p.add_argument("--json", help="where to write the metrics (default: <checkpoint>.evaluation.json)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ArtifactError, ConfigError  # noqa: PLC0415

    if args.circles:
        return run_circles(args)
    if args.cells or args.truth:
        return run_cells(args)
    if not args.checkpoint or not args.dataset:
        raise ConfigError(None, "give CHECKPOINT and DATASET, or --cells DETECTIONS --truth FILE")
    from ..models.checkpoint import load_checkpoint  # noqa: PLC0415
    from ..models.data import CocoPatchDataset, check_classes  # noqa: PLC0415
    from ..models.evaluation import evaluate_detector  # noqa: PLC0415
    from ..device import resolve_device  # noqa: PLC0415
    from ..store.contracts import ModelMeta  # noqa: PLC0415
    from ..taxonomy import Taxonomy  # noqa: PLC0415

    loaded = load_checkpoint(args.checkpoint, resolve_device(args.device))
    meta = ModelMeta.from_dict(loaded.meta, args.checkpoint)
    dataset = CocoPatchDataset(args.dataset)
    check_classes(dataset.info.class_names, meta.taxonomy, Path(args.dataset) / "annotations.json")
    if dataset.info.target_mpp is not None and abs(dataset.info.target_mpp - meta.target_mpp) > 1e-6:
        raise ArtifactError(args.dataset, f"dataset is at {dataset.info.target_mpp} um/px, the model expects "
                                          f"{meta.target_mpp} um/px")
    full = meta.taxonomy_full
    rare = Taxonomy.from_dict(full).abnormal_names() if full else []
    evaluation = evaluate_detector(loaded.detector, dataset, rare, batch_size=args.batch_size)
    print(evaluation.table())
    out = Path(args.json) if args.json else Path(str(args.checkpoint) + ".evaluation.json")
    record = {"checkpoint": str(args.checkpoint), "sha256": meta.sha256, "dataset": str(args.dataset),
              **evaluation.to_dict()}
    out.write_text(json.dumps(record, indent=2))
    print(f"metrics written to {out}")
    return 0


def run_cells(args: argparse.Namespace) -> int:
    from ..aggregate.summary import class_thresholds  # noqa: PLC0415
    from ..config import load_config  # noqa: PLC0415
    from ..datasets.annotations import load_annotations  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415
    from ..models.cell_hits import NucleusHitResult, nucleus_hits, truth_from_annotations  # noqa: PLC0415
    from ..store.detections import read_detections  # noqa: PLC0415
    from ..synth.config import load_synth_config  # noqa: PLC0415
    from ..taxonomy import load_taxonomy  # noqa: PLC0415

    if len(args.cells) != len(args.truth):
        raise ConfigError(None, "give one --truth file per --cells detections table")
    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    aliases = load_synth_config(None, taxonomy).label_aliases
    pooled = NucleusHitResult()
    for det_path, truth_path in zip(args.cells, args.truth):
        det = read_detections(det_path)
        truth = truth_from_annotations(load_annotations(truth_path, taxonomy, aliases))
        pooled = pooled.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth))
    print(pooled.table())
    if args.json:
        Path(args.json).write_text(json.dumps(pooled.to_dict(), indent=2))
        print(f"metrics written to {args.json}")
    return 0


def run_circles(args: argparse.Namespace) -> int:
    from ..aggregate.summary import class_thresholds  # noqa: PLC0415
    from ..config import load_config  # noqa: PLC0415
    from ..datasets.annotations import load_regions  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415
    from ..models.cell_hits import circle_ranking  # noqa: PLC0415
    from ..store.detections import read_detections  # noqa: PLC0415
    from ..taxonomy import load_taxonomy  # noqa: PLC0415

    if args.truth or len(args.cells) != len(args.circles):
        raise ConfigError(None, "give one --circles file per --cells detections table (and no --truth)")
    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    fields = []
    print(f"{'slide folder':<40} {'top in circle':>13} {'best circled rank':>18} {'counted abnormal outside':>25}")
    for det_path, circles_path in zip(args.cells, args.circles):
        det = read_detections(det_path)
        r = circle_ranking(det.boxes, det.class_scores, det.labels, det.scores, thresholds, taxonomy,
                           load_regions(circles_path))
        fields.append({"detections": str(det_path), "circles": str(circles_path), "top_in_circle": r.top_in_circle,
                       "best_circle_rank": r.best_circle_rank, "counted_abnormal": r.counted_abnormal,
                       "counted_abnormal_outside": r.counted_abnormal_outside})
        top = {True: "yes", False: "no", None: "-"}[r.top_in_circle]
        print(f"{det_path.resolve().parent.name[:40]:<40} {top:>13} {str(r.best_circle_rank or '-'):>18} {r.counted_abnormal_outside:>25}")
    ranks = [f["best_circle_rank"] for f in fields if f["best_circle_rank"] is not None]
    median = f"{statistics.median(ranks):g}" if ranks else "-"
    print(f"top detection in a circle: {sum(bool(f['top_in_circle']) for f in fields)}/{len(fields)} fields; "
          f"median best circled rank {median} ({len(ranks)} fields with a circled detection); counted abnormal "
          f"outside circles: {sum(f['counted_abnormal_outside'] for f in fields)} in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"fields": fields}, indent=2))
        print(f"metrics written to {args.json}")
    return 0
