"""Scoring a *second look*: something re-scores a detector's candidate cells offline, from the run folders
``benchmarks/real_cells.py`` wrote (``cric_val/``, ``tct/``, ``demo/``; nothing is re-detected), and the
real-cells targets are measured for the detector alone and with the second look, in the same run.

Used by ``benchmarks/second_look_cells.py`` (a cell classifier) and ``benchmarks/second_look_morphometry.py``
(nuclear morphometry). Both judge by :data:`RULE` (:func:`decide`), fixed before either first looked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..aggregate.cell_hits import HIGH_GRADE_CLASSES, NucleusHitResult, circle_ranking, nucleus_hits, truth_from_annotations
from ..aggregate.summary import summarize
from ..datasets.annotations import load_annotations
from ..datasets.slides import read_mpp_table
from ..store.detections import Detections, read_detections
from ..synth.config import load_synth_config
from .real_fields import CRIC_FIELDS, DATA, TCT_MPP

# (detections, run folder, slide file, slide um/px or None) -> re-scored detections
Rescore = Callable[[Detections, Path, Path, "float | None"], Detections]

RULE = ("Adopted for a detector only if: abnormal found as abnormal +0.05 or more; NILM flagged <= 0.10; high grade as "
        "high grade not lower; squamous counted >= half annotated; tct_marked top-1 in circle not lower and outside "
        "mean <= 6.8; demo planted high-grade found not lower. Fixed before the first look.")


def run_detections(run: Path, slide_path: Path, mpp: float | None, rescore: Rescore | None) -> Detections:
    """A run folder's detections, re-scored by ``rescore`` when one is given."""
    det = read_detections(run / "detections.parquet")
    return det if rescore is None else rescore(det, run, slide_path, mpp)


def score(rescore: Rescore | None, runs: Path, fields: list[Path], taxonomy, thresholds, report_cfg) -> dict:
    """The real-cells targets (as ``benchmarks/real_cells.py`` scores them) from the run folders under ``runs``,
    for the detector alone (``rescore`` None) or with the second look."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    squamous = {c.name for c in taxonomy.classes if c.group == "squamous"}
    pooled, counted, annotated = NucleusHitResult(), 0, 0
    for image in fields:
        det = run_detections(runs / "cric_val" / image.stem, image, mpp[image.stem], rescore)
        cells = load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True)
        pooled = pooled.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth_from_annotations(cells)))
        counted += summarize(det, taxonomy, report_cfg).adequacy.squamous_cells
        annotated += sum(c.class_name in squamous for c in cells)
    record = {"cric_val": {"fields": len(fields), "hits": pooled.to_dict(), "table": pooled.table(),
                           "squamous_counted": counted, "squamous_annotated": annotated}}
    marks = json.loads((DATA / "tct_marked" / "marks.json").read_text())["fields"]
    tct = []
    for name, circles in sorted(marks.items()):
        det = run_detections(runs / "tct" / Path(name).stem, DATA / "tct_marked" / name, TCT_MPP, rescore)
        tct.append(circle_ranking(det.boxes, det.class_scores, det.labels, det.scores, thresholds, taxonomy,
                                  [tuple(c) for c in circles]))
    record["tct_marked"] = {"top_in_circle": sum(bool(r.top_in_circle) for r in tct), "fields": len(tct),
                            "outside_mean": float(np.mean([r.counted_abnormal_outside for r in tct])),
                            "outside": [r.counted_abnormal_outside for r in tct],
                            "best_circle_rank": [r.best_circle_rank for r in tct]}
    demo = runs / "demo"
    if (demo / "demo_tct" / "detections.parquet").is_file():
        det = run_detections(demo / "demo_tct", demo / "slides" / "demo_tct.svs", None, rescore)
        planted = [c for c in truth_from_annotations(load_annotations(demo / "slides" / "demo_tct.cells.geojson", taxonomy, {}))
                   if c.class_name in HIGH_GRADE_CLASSES]
        hits = nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, planted)
        record["demo"] = {"found": hits.abnormal_found, "planted": len(planted)}
    return record


def decide(alone: dict, second: dict) -> tuple[bool, list[str]]:
    """:data:`RULE`: ``(adopted, the conditions that failed)``.

    Example:
        >>> hits = {"abnormal_found": 100, "abnormal_total": 300, "nilm_flagged": 40, "nilm_total": 1000, "high_grade_found": 40}
        >>> r = {"cric_val": {"hits": hits, "squamous_counted": 900, "squamous_annotated": 1300},
        ...      "tct_marked": {"top_in_circle": 3, "outside_mean": 4.0}}
        >>> better = {**r, "cric_val": {**r["cric_val"], "hits": {**hits, "abnormal_found": 115}}}
        >>> decide(r, better), decide(r, r)
        ((True, []), (False, ['abnormal found +0.05']))
    """
    a, s = alone["cric_val"], second["cric_val"]
    ha, hs = a["hits"], s["hits"]
    checks = {
        "abnormal found +0.05": (hs["abnormal_found"] - ha["abnormal_found"]) >= 0.05 * ha["abnormal_total"] - 1e-9,
        "NILM flagged <= 0.10": hs["nilm_flagged"] <= 0.10 * hs["nilm_total"],
        "high grade not lower": hs["high_grade_found"] >= ha["high_grade_found"],
        "squamous >= half": s["squamous_counted"] >= s["squamous_annotated"] / 2,
        "tct top-1 not lower": second["tct_marked"]["top_in_circle"] >= alone["tct_marked"]["top_in_circle"],
        "tct outside <= 6.8": second["tct_marked"]["outside_mean"] <= 6.8,
        "demo not lower": ("demo" not in alone) or second["demo"]["found"] >= alone["demo"]["found"],
    }
    failed = [k for k, ok in checks.items() if not ok]
    return not failed, failed


def _ratio(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


TABLE_HEAD = ("| set-up | abnormal found | NILM flagged | high grade as high grade | squamous counted / annotated "
              "| tct top-1 in circle | outside, mean | demo high grade |\n|---|---|---|---|---|---|---|---|")


def row(name: str, r: dict) -> str:
    """One markdown row of :data:`TABLE_HEAD` for a :func:`score` record."""
    h, c, t = r["cric_val"]["hits"], r["cric_val"], r["tct_marked"]
    demo = f"{r['demo']['found']}/{r['demo']['planted']}" if "demo" in r else "-"
    return (f"| {name} | {h['abnormal_found']}/{h['abnormal_total']} ({_ratio(h['abnormal_recall'])}) "
            f"| {h['nilm_flagged']}/{h['nilm_total']} ({_ratio(h['nilm_flagged_fraction'], 3)}) "
            f"| {h['high_grade_found']}/{h['high_grade_total']} ({_ratio(h['high_grade_recall'])}) "
            f"| {c['squamous_counted']}/{c['squamous_annotated']} | {t['top_in_circle']}/{t['fields']} "
            f"| {t['outside_mean']:.1f} | {demo} |")


__all__ = ["RULE", "TABLE_HEAD", "Rescore", "decide", "row", "run_detections", "score"]
