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
  wsi evaluate --cells out/t1/detections.parquet --truth t1.geojson --calibrate-recall 0.9 --write-thresholds lab.yaml
  wsi-run slides/ --model runs/lab/model.pt --config lab.yaml      # report thresholds from TUNING slides, not validation

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
    p.add_argument("--calibrate-recall", type=float, default=None, metavar="R",
                   help="with --cells/--truth of TUNING slides: choose per abnormal class the highest report "
                        "threshold that finds at least R of its annotated cells, and score the cells again with them")
    p.add_argument("--write-thresholds", type=Path, default=None, metavar="YAML",
                   help="write the calibrated thresholds as a config for `wsi-run --config` (with --calibrate-recall)")
    p.add_argument("--json", help="where to write the metrics (default: <checkpoint>.evaluation.json)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ArtifactError, ConfigError  # noqa: PLC0415

    if args.write_thresholds and args.calibrate_recall is None:
        raise ConfigError(None, "--write-thresholds needs --calibrate-recall")
    if args.calibrate_recall is not None:
        if not (args.cells and args.truth):
            raise ConfigError(None, "--calibrate-recall needs --cells DETECTIONS --truth FILE pairs of tuning slides")
        if not 0 < args.calibrate_recall <= 1:
            raise ConfigError(None, f"--calibrate-recall must be in (0, 1], got {args.calibrate_recall}")
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
    from ..resolution import same_mpp  # noqa: PLC0415
    from ..taxonomy import Taxonomy  # noqa: PLC0415

    loaded = load_checkpoint(args.checkpoint, resolve_device(args.device))
    meta = loaded.model_meta
    dataset = CocoPatchDataset(args.dataset)
    check_classes(dataset.info.class_names, meta.taxonomy, Path(args.dataset) / "annotations.json")
    if dataset.info.target_mpp is not None and not same_mpp(meta.target_mpp, dataset.info.target_mpp):
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
    from ..aggregate.cell_hits import NucleusHitResult, nucleus_hits, truth_from_annotations  # noqa: PLC0415
    from ..store.detections import read_detections  # noqa: PLC0415
    from ..datasets.config import label_aliases  # noqa: PLC0415
    from ..taxonomy import load_taxonomy  # noqa: PLC0415

    if len(args.cells) != len(args.truth):
        raise ConfigError(None, "give one --truth file per --cells detections table")
    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    aliases = label_aliases(taxonomy)
    fields = [(read_detections(d), truth_from_annotations(load_annotations(t, taxonomy, aliases)))
              for d, t in zip(args.cells, args.truth)]
    if args.calibrate_recall is not None:
        thresholds = _calibrate(fields, args.calibrate_recall, thresholds, taxonomy, args)
    pooled = NucleusHitResult()
    for det, truth in fields:
        pooled = pooled.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth))
    print(pooled.table())
    if args.json:
        Path(args.json).write_text(json.dumps(pooled.to_dict(), indent=2))
        print(f"metrics written to {args.json}")
    return 0


def _calibrate(fields, target: float, thresholds: list[float], taxonomy, args: argparse.Namespace) -> list[float]:
    """``thresholds`` with each abnormal class that has tuning cells replaced by its calibrated value
    (printed, and written as a config when ``--write-thresholds`` is given)."""
    import yaml  # noqa: PLC0415

    from ..errors import ConfigError  # noqa: PLC0415
    from ..aggregate.cell_hits import calibrated_thresholds  # noqa: PLC0415

    updated, choices = calibrated_thresholds(fields, target, thresholds, taxonomy)
    if not choices:
        raise ConfigError(None, "no annotated abnormal cell in the --truth files: nothing to calibrate on")
    print(f"report thresholds for recall >= {target} on these tuning cells (same class, as the report counts):")
    for c in choices:
        note = "" if c.reachable else f"  (only {c.recall:.2f} reachable: the other cells have no {c.class_name} detection)"
        print(f"  {c.class_name:<7} {c.threshold:.3f}  recall {c.recall:.2f} of {c.cells}{note}")
    if args.write_thresholds:
        header = (f"# Report thresholds calibrated by `wsi evaluate --calibrate-recall {target}` on {sum(c.cells for c in choices)}\n"
                  f"# annotated abnormal cells of {len(fields)} tuning field(s)/slide(s): "
                  f"{', '.join(str(p) for p in args.truth)}.\n"
                  "# Use: wsi-run SLIDES --model MODEL --config THIS_FILE. Validate on other slides than these.\n")
        body = yaml.safe_dump({"report": {"class_score_thresholds": {c.class_name: c.threshold for c in choices}}},
                              sort_keys=False)
        Path(args.write_thresholds).write_text(header + body)
        print(f"thresholds written to {args.write_thresholds}")
    print("nucleus hits at these thresholds (tuning cells: optimistic by construction):")
    return updated


def run_circles(args: argparse.Namespace) -> int:
    from ..aggregate.summary import class_thresholds  # noqa: PLC0415
    from ..config import load_config  # noqa: PLC0415
    from ..datasets.annotations import load_regions  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415
    from ..aggregate.cell_hits import circle_ranking  # noqa: PLC0415
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
