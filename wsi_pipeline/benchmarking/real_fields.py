"""The real validation fields, each run through ``wsi-run``'s per-slide path (tiling -> detection -> report)
and scored: used by ``benchmarks/real_fields.py``, ``real_cells.py``, ``cric_finetune.py``, ``cpu_tiles.py``,
``mpp_sensitivity.py`` and ``docs/report_example.py``.

* the 8 CRIC conventional Pap fields of ``cric/`` (187 nuclei with Bethesda labels): nucleus hits at the
  report thresholds, pooled and per field; the 8 fields side by side as one mosaic slide and its call;
* the CRIC fields of ``cric_fields/`` on the validation side of the committed split (:data:`CRIC_SPLIT`);
* the 7 TCT fields of ``tct_marked/`` (abnormal cells circled by a reader): the ranking of the circled cells.

Pixel sizes of these sources are not recorded; :data:`CRIC_MPP` and :data:`TCT_MPP` were fixed from nucleus
and neutrophil sizes before any model was scored on them, and are never tuned on the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..config import load_config
from ..datasets.annotations import load_annotations
from ..datasets.slides import point_csv_pairs
from ..datasets.split import read_split
from ..aggregate.cell_hits import NucleusHitResult, circle_ranking, nucleus_hits, truth_from_annotations
from ..pipeline import RunOptions, run_slide
from ..store.detections import read_detections
from ..synth.config import load_synth_config
from ..taxonomy import load_taxonomy
from . import CRIC_SPLIT, CYTOLOGY

DATA = CYTOLOGY
CRIC_FIELDS = DATA / "cric_fields"  # 350 annotated fields, split by field in CRIC_SPLIT; pixel sizes in fields.csv
CRIC_MPP = 0.30  # neutrophils ~30 px (~10 um), intermediate squamous cells 150-180 px (~50 um)
TCT_MPP = 0.45  # MANIFEST: "about 0.4-0.5 um/px judging by nuclei"; nuclei ~1.6-1.9x smaller than lbc_field's


def run_field(image: Path, out: Path, model: Path, mpp: float, overrides: dict | None = None) -> Path:
    """``wsi-run``'s per-slide path on one field image (threads scheduler, forced; config ``overrides`` on top of
    the defaults); its output folder."""
    overrides = overrides or {}
    cfg = load_config(overrides={**overrides, "tiling": {**overrides.get("tiling", {}), "scheduler": "threads"}})
    outcome = run_slide(image, out, cfg, RunOptions(model=model, mpp=mpp, progress=False, force=True))
    if not outcome.ok:
        raise SystemExit(f"error: {image}: {outcome.reason}")
    return Path(outcome.out_dir)


def cric_fields() -> list[Path]:
    """The 8 CRIC field images of ``cric/``, sorted."""
    return sorted((DATA / "cric").glob("*.webp"))


def split_fields(side: str, limit: int | None = None) -> list[Path]:
    """The annotated ``cric_fields`` images on ``side`` (``train`` or ``val``) of the committed split, sorted."""
    split = read_split(CRIC_SPLIT)
    fields = sorted(image for image, _ in point_csv_pairs(CRIC_FIELDS / "cells.csv") if split.side(image) == side)
    return fields[:limit] if limit else fields


def validation_fields(limit: int | None = None) -> list[Path]:
    """The ``cric_fields`` images on the validation side of the committed split, sorted."""
    return split_fields("val", limit)


def cric(model: Path, out: Path, taxonomy, thresholds, fields: list[Path] | None = None, mpp: float = CRIC_MPP) -> dict:
    """Nucleus hits on CRIC ``fields`` (default: all 8), pooled and per field."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    pooled, per_field = NucleusHitResult(), {}
    for image in fields or cric_fields():
        det = read_detections(run_field(image, out / "cric", model, mpp) / "detections.parquet")
        truth = truth_from_annotations(load_annotations(image.with_suffix(".geojson"), taxonomy, aliases))
        hits = nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth)
        per_field[image.stem[:8]] = {"abnormal": f"{hits.abnormal_found}/{hits.abnormal_total}",
                                     "nilm_flagged": f"{hits.nilm_flagged}/{hits.nilm_total}"}
        pooled = pooled.add(hits)
    return {"pooled": pooled, "per_field": per_field}


def write_cric_mosaic(out: Path, columns: int = 4, fields: list[Path] | None = None) -> Path:
    """CRIC ``fields`` (default: all 8, 4 x 2) side by side as one PNG image; its pixel size is CRIC_MPP."""
    images = [cv2.imread(str(p)) for p in fields or cric_fields()]
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)  # fields may differ by a pixel
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    mosaic = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        mosaic[r * h : r * h + img.shape[0], c * w : c * w + img.shape[1]] = img
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cric_mosaic.png"
    cv2.imwrite(str(path), mosaic)
    return path


def cric_mosaic(model: Path, out: Path, fields: list[Path] | None = None) -> dict:
    """The slide call on a mosaic of CRIC ``fields`` (default: all 8); truth is their most severe label."""
    taxonomy = load_taxonomy()
    aliases = load_synth_config(None, taxonomy).label_aliases
    labels = {a.class_name for f in fields or cric_fields() for a in load_annotations(f.with_suffix(".geojson"), taxonomy, aliases)}
    truth = max(labels, key=lambda name: taxonomy[name].severity)
    report = json.loads((run_field(write_cric_mosaic(out, fields=fields), out, model, CRIC_MPP) / "report.json").read_text())
    return {"category": report["category"]["name"], "truth": truth}


def tct_marked(model: Path, out: Path, taxonomy, thresholds, mpp: float = TCT_MPP, overrides: dict | None = None) -> dict:
    """Per ``tct_marked`` field: is the top abnormal call in a reader's circle, counted calls outside, best rank
    (config ``overrides`` on top of the defaults, as :func:`run_field`)."""
    marks = json.loads((DATA / "tct_marked" / "marks.json").read_text())["fields"]
    fields = {}
    for name, circles in sorted(marks.items()):
        det = read_detections(run_field(DATA / "tct_marked" / name, out / "tct", model, mpp, overrides) / "detections.parquet")
        r = circle_ranking(det.boxes, det.class_scores, det.labels, det.scores, thresholds, taxonomy,
                           [tuple(c) for c in circles])
        fields[name] = {"top_in_circle": r.top_in_circle, "top_score": r.top_score,
                        "counted_abnormal": r.counted_abnormal, "counted_abnormal_outside": r.counted_abnormal_outside,
                        "best_circle_rank": r.best_circle_rank}
    return fields
