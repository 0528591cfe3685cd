"""Can report thresholds chosen on some annotated fields rescue a model on others? (model card numbers)

The CRIC fields are split into two halves of 4 (sorted by name: first 4, last 4). For each half, the
report thresholds of the abnormal classes are calibrated for ``--recall`` on its annotated nuclei
(``wsi evaluate --calibrate-recall``'s rule: same-class detection containing the centre) and the other
half is scored with them (nucleus hits: abnormal found, NILM flagged), next to the default thresholds
on the same half. Detections come from a ``benchmarks/real_fields.py`` run (its ``cric/<field>/``
folders), so nothing is re-detected here.

    python benchmarks/real_fields.py --out benchmarks/results/real_fields_starter20   # once
    python benchmarks/threshold_calibration.py --fields benchmarks/results/real_fields_starter20/cric
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wsi_pipeline.aggregate.cell_hits import NucleusHitResult, calibrated_thresholds, nucleus_hits, truth_from_annotations
from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import CYTOLOGY
from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.store.detections import read_detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

CRIC = CYTOLOGY / "cric"


def load_fields(detections_root: Path, truth_root: Path, taxonomy) -> list[tuple[str, object, list]]:
    """``(field id, detections, truth cells)`` for every ``truth_root/<id>.geojson`` with detections in
    ``detections_root/<id>/detections.parquet``, sorted by id."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    fields = []
    for truth_path in sorted(truth_root.glob("*.geojson")):
        det_path = detections_root / truth_path.stem / "detections.parquet"
        if not det_path.is_file():
            raise SystemExit(f"error: {det_path}: not found (run benchmarks/real_fields.py first)")
        truth = truth_from_annotations(load_annotations(truth_path, taxonomy, aliases))
        fields.append((truth_path.stem, read_detections(det_path), truth))
    if len(fields) < 2:
        raise SystemExit(f"error: {truth_root}: need at least 2 annotated fields, found {len(fields)}")
    return fields


def score(fields, thresholds, taxonomy) -> NucleusHitResult:
    result = NucleusHitResult()
    for _, det, truth in fields:
        result = result.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth))
    return result


def fold(tuning, held_out, recall: float, defaults: list[float], taxonomy) -> dict:
    """Thresholds calibrated on ``tuning``; held-out nucleus hits with them and with ``defaults``."""
    thresholds, choices = calibrated_thresholds([(det, truth) for _, det, truth in tuning], recall, defaults, taxonomy)
    calibrated, default = score(held_out, thresholds, taxonomy), score(held_out, defaults, taxonomy)
    return {
        "tuning": [f for f, *_ in tuning], "held_out": [f for f, *_ in held_out],
        "thresholds": {c.class_name: c.threshold for c in choices},
        "tuning_cells": {c.class_name: c.cells for c in choices},
        "calibrated": {"abnormal": [calibrated.abnormal_found, calibrated.abnormal_total],
                       "nilm_flagged": [calibrated.nilm_flagged, calibrated.nilm_total]},
        "default": {"abnormal": [default.abnormal_found, default.abnormal_total],
                    "nilm_flagged": [default.nilm_flagged, default.nilm_total]},
    }


def pooled(folds: list[dict], which: str) -> dict[str, list[int]]:
    """``[found, total]`` of abnormal cells and NILM flagged, summed over the folds' held-out halves."""
    return {k: [sum(f[which][k][i] for f in folds) for i in (0, 1)] for k in ("abnormal", "nilm_flagged")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=Path, required=True, help="cric/ folder of a benchmarks/real_fields.py run")
    ap.add_argument("--truth", type=Path, default=CRIC, help="folder of the fields' <id>.geojson (default: CRIC)")
    ap.add_argument("--recall", type=float, default=0.7, help="target recall of the calibration (default 0.7)")
    ap.add_argument("--json", type=Path, default=None, help="also write the folds here")
    args = ap.parse_args(argv)
    taxonomy = load_taxonomy()
    defaults, _ = class_thresholds(taxonomy, load_config().report)
    fields = load_fields(args.fields, args.truth, taxonomy)
    half = len(fields) // 2
    a, b = fields[:half], fields[half:]
    folds = [fold(a, b, args.recall, defaults, taxonomy), fold(b, a, args.recall, defaults, taxonomy)]
    for f in folds:
        print(json.dumps(f))
    total, base = pooled(folds, "calibrated"), pooled(folds, "default")
    print(f"pooled held-out at recall {args.recall}: abnormal found {total['abnormal'][0]}/{total['abnormal'][1]} "
          f"(default thresholds {base['abnormal'][0]}/{base['abnormal'][1]}), NILM flagged "
          f"{total['nilm_flagged'][0]}/{total['nilm_flagged'][1]} (default {base['nilm_flagged'][0]}/{base['nilm_flagged'][1]})")
    if args.json:
        args.json.write_text(json.dumps(folds, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
