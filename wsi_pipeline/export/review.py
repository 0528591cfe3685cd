"""The review page of a slide: ``review.html`` (the flagged cells, keyboard-first) and ``review.geojson``
(the decisions, every flagged cell ``pending`` until a person decides).

Flagged cells: every counted abnormal cell (most severe class first, then by score), then the most
suspicious of the other detections (highest abnormal-class score, at least :data:`MIN_SUSPECT_SCORE`)
until ``limit`` cells are flagged; the counted abnormal cells are always all there, even above the limit.
Each one is shown as a full-resolution crop with the model's call, its score and the nucleus measures of
the report. The page is one file (pictures and script inline, no network); docs/review.md says how it
saves and resumes.

An existing ``review.geojson`` of the same slide is never overwritten with pending cells: its decisions
are carried over cell by cell (:func:`wsi_pipeline.store.review.merge`), so rerunning ``wsi report`` keeps a
reviewer's work. One of another slide (the folder was reused) is moved aside to
``review.<fingerprint>.geojson`` with a warning.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import RESEARCH_NOTICE
from ..aggregate import TopCell
from ..config import ReportConfig
from ..fsutil import atomic_write
from ..io.slide import Slide
from ..store import review as decisions
from ..store.artifacts import REVIEW_GEOJSON_NAME, REVIEW_HTML_NAME
from ..store.detections import Detections
from ..taxonomy import Taxonomy
from .cells import QUPATH_NC_RATIO, QUPATH_NUCLEUS_AREA, QUPATH_NUCLEUS_TO_NILM
from .images import CellCrop, read_cell_crops
from .nuclei import nucleus_caption

log = logging.getLogger(__name__)

DEFAULT_LIMIT = ReportConfig.review_cells  # flagged cells per slide (all counted abnormal cells are flagged even above it)
MAX_FLAGGED = 1000  # but never more than this many (the page embeds every crop); the best-scored are kept
MIN_SUSPECT_SCORE = 0.1  # an uncounted detection is flagged only with an abnormal-class score at least this


@dataclass
class FlaggedCell:
    """One cell on the review page (level-0 box) and why it is there."""

    row: int  # detections row
    box: tuple[float, float, float, float]
    model_class: str  # the detector's call (its top class)
    model_score: float
    counted: bool  # counted as abnormal in the report
    suspect_class: str  # the abnormal class with the highest score
    suspect_score: float
    patch_index: int = 0
    nucleus: dict[str, Any] | None = None

    @property
    def cell_id(self) -> str:
        return f"cell-{self.row}"


def select_flagged(det: Detections, counted: np.ndarray, taxonomy: Taxonomy, limit: int = DEFAULT_LIMIT,
                   min_score: float = MIN_SUSPECT_SCORE, max_cells: int = MAX_FLAGGED) -> list[FlaggedCell]:
    """Every counted abnormal cell (most severe first, then by score; at most ``max_cells``), then the other
    detections by their highest abnormal-class score (at least ``min_score``) up to ``limit`` cells in all.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> cs = np.zeros((3, len(tax)), np.float32)
        >>> cs[0, tax.index("NILM")], cs[0, tax.index("LSIL")] = 0.7, 0.3   # NILM call, some LSIL score
        >>> cs[1, tax.index("HSIL")] = 0.9                                  # counted HSIL
        >>> cs[2, tax.index("NILM")] = 0.9                                  # plain NILM: never flagged
        >>> det = Detections(np.zeros((3, 4), np.float32), cs.max(1), cs.argmax(1).astype(np.int16),
        ...                  np.zeros(3, np.int32), cs)
        >>> [(c.row, c.model_class, c.counted, c.suspect_class) for c in select_flagged(det, np.array([True, True, True]), tax)]
        [(1, 'HSIL', True, 'HSIL'), (0, 'NILM', False, 'LSIL')]
    """
    abnormal = [i for i, c in enumerate(taxonomy.classes) if c.abnormal]
    if len(det) == 0 or not abnormal:
        return []
    abn_scores = det.class_scores[:, abnormal].astype(np.float32)
    best = abn_scores.max(axis=1)
    best_class = np.asarray(abnormal)[abn_scores.argmax(axis=1)]
    labels = det.labels.astype(np.int64)
    counted_abn = np.asarray(counted, bool) & np.isin(labels, abnormal)
    severity = np.array([taxonomy[int(k)].severity for k in labels])
    first = np.flatnonzero(counted_abn)
    first = first[np.lexsort((-det.scores[first], -severity[first]))]
    if first.size > max_cells:
        log.warning("%d counted abnormal cells: the review page shows the %d most severe and confident", first.size, max_cells)
        first = first[np.sort(np.argsort(-det.scores[first], kind="stable")[:max_cells])]
    rest = np.flatnonzero(~counted_abn & (best >= min_score))
    rest = rest[np.argsort(-best[rest], kind="stable")][: max(0, limit - first.size)]
    return [
        FlaggedCell(row=int(i), box=tuple(float(v) for v in det.boxes[i]), model_class=taxonomy[int(labels[i])].name,
                    model_score=float(det.scores[i]), counted=bool(counted_abn[i]),
                    suspect_class=taxonomy[int(best_class[i])].name, suspect_score=float(best[i]),
                    patch_index=int(det.patch_index[i]))
        for i in np.concatenate([first, rest]).astype(np.int64)
    ]


def qupath_measurements(cell: FlaggedCell) -> dict[str, float]:
    """The model's score and the nucleus measures under the names of the cell export (QuPath's measurement table).

    Example:
        >>> c = FlaggedCell(3, (0, 0, 10, 10), "HSIL", 0.91234, True, "HSIL", 0.91234,
        ...                 nucleus={"found": True, "area_um2": 61.234, "ratio_to_nilm_median": None, "nc_ratio": 0.31})
        >>> qupath_measurements(c)
        {'Model score': 0.9123, 'Nucleus: Area µm^2': 61.23, 'Nucleus/Cell area ratio': 0.31}
    """
    measurements = {"Model score": round(float(cell.model_score), 4)}
    nucleus = cell.nucleus or {}
    for key, name, digits in (("area_um2", QUPATH_NUCLEUS_AREA, 2), ("ratio_to_nilm_median", QUPATH_NUCLEUS_TO_NILM, 3),
                              ("nc_ratio", QUPATH_NC_RATIO, 4)):
        if nucleus.get(key) is not None:
            measurements[name] = round(float(nucleus[key]), digits)
    return measurements


def fresh_document(cells: list[FlaggedCell], taxonomy: Taxonomy, slide_name: str, fingerprint: str,
                   model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decisions document with every flagged cell pending."""
    features = [decisions.cell_feature(c.cell_id, c.box, c.model_class, c.model_score, list(taxonomy[c.model_class].rgb),
                                       c.counted, c.suspect_class, c.suspect_score, c.row, c.nucleus, qupath_measurements(c))
                for c in cells]
    extra = {"model": {k: model[k] for k in ("file", "sha256") if model and model.get(k)}} if model else None
    return decisions.new_document(slide_name, fingerprint, features, extra)


def review_document_for(out_dir: Path, fresh: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """What ``review.geojson`` in ``out_dir`` should hold now: ``fresh`` with the decisions already there carried
    over; plus a warning when an existing file could not be used (it is moved aside, never deleted)."""
    path = out_dir / REVIEW_GEOJSON_NAME
    if not path.is_file():
        return fresh, ""
    fingerprint = fresh["slide"]["fingerprint"]
    try:
        old = decisions.read_review(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable old file is kept aside, not fatal
        return fresh, _move_aside(path, "unreadable", f"{exc}")
    if old["slide"]["fingerprint"] != fingerprint:
        return fresh, _move_aside(path, str(old["slide"]["fingerprint"])[:12], "decisions of another slide")
    return decisions.merge(fresh, old), ""


def _move_aside(path: Path, tag: str, why: str) -> str:
    target = path.with_name(f"review.{tag}.geojson")
    path.replace(target)
    return f"{path}: {why}; moved to {target.name}, a new {path.name} was written"


def write_review_files(out_dir: str | Path, cells: list[FlaggedCell], crops: list[CellCrop] | None, taxonomy: Taxonomy,
                       slide_name: str, fingerprint: str, model: dict[str, Any] | None = None,
                       slide_note: str = "") -> tuple[Path, Path, dict[str, Any]]:
    """Write ``review.geojson`` (existing decisions kept) and ``review.html`` into ``out_dir``.

    Returns both paths and the decisions document written.
    """
    out_dir = Path(out_dir)
    doc, warning = review_document_for(out_dir, fresh_document(cells, taxonomy, slide_name, fingerprint, model))
    if warning:
        log.warning("%s", warning)
    geojson = decisions.write_review(out_dir / REVIEW_GEOJSON_NAME, doc)
    html = atomic_write(out_dir / REVIEW_HTML_NAME, render_review_page(cells, crops, doc, taxonomy, slide_name, slide_note))
    return html, geojson, doc


def flagged_crops(slide: Slide | None, cells: list[FlaggedCell], crop_um: float, fmt: str = "jpeg",
                  jpeg_quality: int = 90, regions: dict | None = None) -> list[CellCrop] | None:
    """Full-resolution crops of the flagged cells (``None`` without slide pixels)."""
    if slide is None:
        return None
    top = [TopCell(rank=i + 1, row=c.row, class_name=c.model_class, score=c.model_score, box=c.box,
                   patch_index=c.patch_index) for i, c in enumerate(cells)]
    return read_cell_crops(slide, top, crop_um, fmt, jpeg_quality, regions=regions)


def render_review_page(cells: list[FlaggedCell], crops: list[CellCrop] | None, doc: dict[str, Any], taxonomy: Taxonomy,
                       slide_name: str, slide_note: str = "") -> str:
    """The self-contained review page: cells, crops and the embedded decisions (the page resumes from them)."""
    from .html import _ENV  # noqa: PLC0415 - the report's template environment

    crop_by_row = {c.cell.row: c for c in crops or []}
    page_cells = []
    for c in cells:
        crop = crop_by_row.get(c.row)
        x0, y0, x1, y1 = c.box
        page_cells.append({
            "id": c.cell_id, "key": _js_box_key(c.box), "model_class": c.model_class,
            "model_score": round(c.model_score, 4), "counted": c.counted, "suspect_class": c.suspect_class,
            "suspect_score": round(c.suspect_score, 4), "x": round((x0 + x1) / 2), "y": round((y0 + y1) / 2),
            "w": round(x1 - x0), "h": round(y1 - y0), "nucleus": nucleus_caption(c.nucleus),
            "crop": crop.data_uri if crop else "", "crop_size": crop.size if crop else 0,
            "box_pct": list(crop.box_in_crop_percent()) if crop else None,
        })
    classes = [{"name": cc.name, "label": cc.label, "color": cc.color, "abnormal": cc.abnormal,
                "key": str((i + 1) % 10) if i < 10 else ""} for i, cc in enumerate(taxonomy.classes)]  # keys 1-9, 0
    data = {"slide": doc["slide"], "cells": page_cells, "classes": classes, "reasons": list(decisions.REJECT_REASONS),
            "decisions": doc, "schema": decisions.REVIEW_SCHEMA, "version": decisions.REVIEW_VERSION,
            "rejected": {"name": decisions.REJECTED_CLASS, "color": decisions.REJECTED_COLOR}}
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return _ENV.get_template("review.html.j2").render(
        slide_name=slide_name, fingerprint=doc["slide"]["fingerprint"], n_cells=len(cells), payload=payload,
        classes=classes, reasons=decisions.REJECT_REASONS, notice=RESEARCH_NOTICE, slide_note=slide_note,
        has_pixels=crops is not None,
    )


def _js_box_key(box: tuple[float, float, float, float]) -> str:
    """The page's key of a cell: its box in tenths of a pixel (the precision stored in review.geojson)."""
    return ",".join(str(int(round(round(float(v), 1) * 10))) for v in box)


def rebuild_review(run_dir: str | Path, taxonomy: Taxonomy, limit: int = DEFAULT_LIMIT, slide_path: str | Path | None = None,
                   crop_um: float | None = None, report_cfg: Any = None,
                   keep_page_without_pixels: bool = False) -> tuple[Path, Path, dict[str, Any]]:
    """(Re)write ``review.html`` and ``review.geojson`` of a finished run folder from its own files
    (``detections.parquet``, ``cells.csv`` for the nucleus measures, the slide for the crops), keeping the
    decisions already saved there. For ``wsi review`` on folders written before the review page existed, or
    with another ``limit``."""
    from ..aggregate import summarize  # noqa: PLC0415
    from ..config import ReportConfig  # noqa: PLC0415
    from ..errors import ArtifactError  # noqa: PLC0415
    from ..store.artifacts import DETECTIONS_NAME  # noqa: PLC0415
    from ..store.contracts import SlideInfo  # noqa: PLC0415
    from ..store.detections import read_detections  # noqa: PLC0415
    from .slide_access import open_report_slide  # noqa: PLC0415

    run_dir = Path(run_dir)
    cfg = report_cfg or ReportConfig()
    detections = run_dir / DETECTIONS_NAME
    if not detections.is_file():
        raise ArtifactError(run_dir, f"no {DETECTIONS_NAME} here: not a finished `wsi-run` / `wsi detect` folder")
    det = read_detections(detections)
    counted = summarize(det, taxonomy, cfg).counted_mask(det)
    cells = select_flagged(det, counted, taxonomy, limit)
    _attach_csv_nuclei(run_dir / "cells.csv", cells, np.flatnonzero(counted))
    meta = det.meta
    info = (meta.slide if meta and meta.slide else SlideInfo())
    access = open_report_slide(meta, slide_path)
    if access.slide is None and keep_page_without_pixels:
        fresh = fresh_document(cells, taxonomy, info.name, info.fingerprint)
        doc, warning = review_document_for(run_dir, fresh)
        geojson = decisions.write_review(run_dir / REVIEW_GEOJSON_NAME, doc)
        for line in filter(None, (warning, f"{access.note}; {REVIEW_HTML_NAME} kept as it was (give the slide with --slide)")):
            log.warning("%s", line)
        return run_dir / REVIEW_HTML_NAME, geojson, doc
    try:
        crops = flagged_crops(access.slide, cells, crop_um or cfg.crop_size_um, cfg.crop_format, cfg.jpeg_quality)
    finally:
        if access.slide is not None:
            access.slide.close()
    model = {"file": Path(meta.model.path).name if meta and meta.model and meta.model.path else "",
             "sha256": meta.model.sha256 if meta and meta.model else ""}
    if not info.fingerprint:
        raise ArtifactError(detections, "the detections record no slide fingerprint; a review needs the slide's identity")
    return write_review_files(run_dir, cells, crops, taxonomy, info.name, info.fingerprint, model, access.note)


def _attach_csv_nuclei(cells_csv: Path, cells: list[FlaggedCell], counted_rows: np.ndarray) -> None:
    """The report's nucleus measures of counted cells, from ``cells.csv`` (its rows are the counted cells in
    table order)."""
    if not cells_csv.is_file():
        return
    with open(cells_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != len(counted_rows):
        return  # written with other thresholds: do not guess
    by_row = {int(r): rows[i] for i, r in enumerate(counted_rows)}
    for c in cells:
        r = by_row.get(c.row)
        if r is None or r.get("nucleus") in (None, "", "not_measured"):
            continue
        value = lambda k: float(r[k]) if r.get(k) not in (None, "") else None  # noqa: E731
        c.nucleus = {"found": r["nucleus"] == "found", "area_um2": value("nucleus_area_um2"),
                     "ratio_to_nilm_median": value("nucleus_to_nilm_median"), "nc_ratio": value("nc_ratio")}


def review_for_report(out_dir: str | Path, cells: list[FlaggedCell], crops: list[CellCrop] | None, taxonomy: Taxonomy,
                      slide_name: str, fingerprint: str, model: dict[str, Any] | None,
                      nucleus_for: Callable[[int], dict[str, Any] | None], slide_note: str = "") -> dict[str, Any] | None:
    """What ``write_report`` calls: the review page and decisions file of the slide (existing decisions kept).

    Returns the decisions document, or ``None`` when the detections record no slide fingerprint (a review
    must name its slide, so none is written)."""
    for c in cells:
        c.nucleus = nucleus_for(c.row)
    if not fingerprint:
        log.info("no slide fingerprint recorded: no review page written")
        return None
    return write_review_files(out_dir, cells, crops, taxonomy, slide_name, fingerprint, model, slide_note)[2]


def review_in_report(top_cells: list[dict[str, Any]], doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``review`` section of report.json once the slide has decisions (else ``None``: report.json is then
    exactly what it was before reviews existed), and each reviewed top cell's ``review`` entry beside the
    model's call (never replacing it)."""
    if doc is None or not decisions.is_reviewed(doc):
        return None
    by_box = decisions.decisions_by_box(doc)
    for entry in top_cells:
        f = by_box.get(decisions.box_key(entry["box"]))
        if f is not None:
            p = f["properties"]
            entry["review"] = {"review": p["review"], "class": None if p["review"] == "rejected" else p["classification"]["name"],
                               "rejected_as": p.get("rejected_as"), "reviewer": p.get("reviewer"),
                               "timestamp": p.get("timestamp")}
    return decisions.summary_block(doc, REVIEW_GEOJSON_NAME)

__all__ = ["DEFAULT_LIMIT", "REVIEW_GEOJSON_NAME", "REVIEW_HTML_NAME", "FlaggedCell", "flagged_crops", "fresh_document",
           "qupath_measurements",
           "rebuild_review", "render_review_page", "review_document_for", "review_for_report", "review_in_report",
           "select_flagged", "write_review_files"]
