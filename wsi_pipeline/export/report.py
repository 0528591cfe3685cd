"""``write_report``: a slide's detections -> report.json, report.html, cells.geojson/.xml/.csv.

Each file is written to a temporary name and renamed; ``report.json`` is written last and is the
completion marker (a stale one is removed before anything else is written). The schema of
``report.json`` is documented in docs/report.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import RESEARCH_NOTICE, __version__
from ..aggregate import ADEQUACY_NOTE, SUSPICION_FORMULA, SlideSummary, summarize
from ..aggregate.specimen import apply_to_summary, check_store_and_slide
from ..config import ReportConfig
from ..errors import ArtifactError
from ..fsutil import atomic_write
from ..io.slide import Slide
from ..store.artifacts import REPORT_HTML_NAME, REPORT_NAME, STORE_NAME
from ..store.contracts import DetectionsMeta, SlideInfo
from ..store.detections import Detections, read_detections
from ..taxonomy import Taxonomy
from .cells import EXPORTERS, CellTable
from .document import ReportDocument, ReportSlide
from .html import render_html
from .images import read_cell_crops, render_overview
from .nuclei import measure_slide_cells, nucleus_caption
from .review import flagged_crops, review_for_report, review_in_report, select_flagged
from .slide_access import open_report_slide

log = logging.getLogger(__name__)

# Scanner property keys that can carry patient or case data, or free text that may embed it.
PRIVATE_PROPERTY = re.compile(
    r"label|barcode|patient|name|date|time|user|operator|comment|description|accession|case|specimen|"
    r"subject|birth|dob|sex|gender|macro|filename|file|path|\bid\b|id$|uid|serial",
    re.IGNORECASE,
)
MAX_PROPERTY_VALUE = 64  # longer values are free text; dropped


@dataclass
class ReportPaths:
    """Where the report's files are (``json`` is the completion marker); ``exports`` has one per :data:`EXPORTERS` entry.

    An export is also an attribute by its name: ``paths.geojson``.
    """

    json: Path
    html: Path
    exports: dict[str, Path]

    @classmethod
    def in_folder(cls, out_dir: Path) -> ReportPaths:
        return cls(out_dir / REPORT_NAME, out_dir / REPORT_HTML_NAME,
                   {name: out_dir / fmt.file_name for name, fmt in EXPORTERS.items()})

    def __getattr__(self, name: str) -> Path:
        exports = self.__dict__.get("exports", {})
        if name in exports:
            return exports[name]
        raise AttributeError(name)

    def files(self) -> dict[str, str]:
        """File names by role, as listed in ``report.json``."""
        return {"json": self.json.name, "html": self.html.name, **{k: p.name for k, p in self.exports.items()}}


def filter_scanner_properties(properties: dict[str, str]) -> dict[str, str]:
    """Scanner properties safe to put in a report: no label/barcode/patient/name/date/user fields, no free text.

    Example:
        >>> filter_scanner_properties({"aperio.MPP": "0.499", "aperio.User": "x", "aperio.Date": "12/29/09",
        ...                            "openslide.comment": "Aperio|Filename = CMU-1"})
        {'aperio.MPP': '0.499'}
    """
    return {
        k: str(v) for k, v in sorted(properties.items())
        if not PRIVATE_PROPERTY.search(k) and len(str(v)) <= MAX_PROPERTY_VALUE and "|" not in str(v) and "\n" not in str(v)
    }


def write_report(
    detections_path: str | Path,
    out_dir: str | Path,
    cfg: ReportConfig,
    taxonomy: Taxonomy,
    slide_path: str | Path | None = None,
    timings: dict[str, float] | None = None,
) -> ReportPaths:
    """Write the slide report and exports for ``detections_path`` into ``out_dir``.

    ``slide_path`` overrides the slide location recorded in the detections (slides move);
    ``timings`` (seconds per stage, e.g. ``{"tiling_s": 12.0}``) are added to those recorded.

    Example:
        >>> import tempfile, numpy as np
        >>> from wsi_pipeline.store.detections import write_detections
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax, d = load_taxonomy(), Path(tempfile.mkdtemp())
        >>> write_detections(d / "detections.parquet", Detections.empty(len(tax)),
        ...                  {"taxonomy": tax.names, "complete": True, "slide": {"width": 100, "height": 80, "mpp": [0.5, 0.5]}})
        >>> paths = write_report(d / "detections.parquet", d, ReportConfig(), tax)
        >>> json.loads(paths.json.read_text())["category"]["name"]
        'NILM'
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    paths = ReportPaths.in_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths.json.unlink(missing_ok=True)  # the marker goes first: a half-rewritten report is never "complete"

    det = read_detections(detections_path)
    meta = det.meta or DetectionsMeta(taxonomy=[], complete=False)
    if list(meta.taxonomy) != taxonomy.names:
        raise ArtifactError(detections_path, "detections were made with a different taxonomy than the one configured "
                                             f"({meta.taxonomy} vs {taxonomy.names})")
    summary = summarize(det, taxonomy, cfg)
    counted = summary.counted_mask(det)
    counted_rows = np.flatnonzero(counted)
    cells = CellTable(det.boxes[counted], det.scores[counted], det.labels[counted], det.patch_index[counted])
    log.info("%d detections, %d cells above their class threshold; category %s, suspicion %.3f, adequacy %s",
             len(det), len(cells), summary.category.name, summary.suspicion_score, summary.adequacy.status)

    access = open_report_slide(meta, slide_path)
    if access.note:
        log.warning("%s", access.note)
    try:
        specimen = check_store_and_slide(access.slide, _store_path(meta, detections_path))
        apply_to_summary(summary, specimen)  # no Bethesda category for a slide that is not a Pap preparation
        if specimen.status != "ok":
            log.warning("specimen check: %s: %s", specimen.status, specimen.reason)
        slide_size, slide_mpp = _slide_geometry(meta.slide or SlideInfo(), access.slide, detections_path)
        overview = render_overview(access.slide, slide_size, slide_mpp, cells.boxes, cells.labels, taxonomy,
                                   cfg.thumbnail_max_px, cfg.heatmap_grid_um)
        top = [c for name in sorted(summary.top_cells, key=lambda n: -taxonomy[n].severity) for c in summary.top_cells[name]]
        nuclei = measure_slide_cells(access.slide, cells, counted_rows, taxonomy, cfg.morphometry_nilm_sample,
                                     keep_rows={c.row for c in top}, enabled=cfg.morphometry,
                                     workers=cfg.morphometry_workers)
        cells.nuclei = nuclei.columns
        row_to_cell = {int(r): i for i, r in enumerate(counted_rows)}
        captions = {c.row: nucleus_caption(nuclei.for_row(c.row, row_to_cell)) for c in top}
        crops = (read_cell_crops(access.slide, top, cfg.crop_size_um, cfg.crop_format, cfg.jpeg_quality,
                                 regions=nuclei.regions, captions=captions) if access.slide else [])
        flagged = select_flagged(det, counted, taxonomy, cfg.review_cells)  # the review page's cells (docs/review.md)
        flagged_pictures = flagged_crops(access.slide, flagged, cfg.crop_size_um, cfg.crop_format, cfg.jpeg_quality,
                                         regions=nuclei.regions)
        nuclei.regions.clear()
        properties = filter_scanner_properties(access.slide.properties) if access.slide else {}
    finally:
        if access.slide is not None:
            access.slide.close()

    for name, fmt in EXPORTERS.items():
        atomic_write(paths.exports[name], fmt.write(cells, taxonomy))
    slide_info = meta.slide or SlideInfo()
    review_doc = review_for_report(out_dir, flagged, flagged_pictures, taxonomy, slide_info.name, slide_info.fingerprint,
                                   {"file": Path(meta.model.path).name if meta.model and meta.model.path else "",
                                    "sha256": meta.model.sha256 if meta.model else ""},
                                   lambda row: nuclei.for_row(row, row_to_cell), access.note)

    all_timings = {**_recorded_timings(meta), **(timings or {})}
    all_timings["report_s"] = round(time.perf_counter() - started, 2)
    report = build_report(summary, det, cfg, properties, all_timings, access.note, paths)
    report.specimen = specimen
    report.morphometry = nuclei.block
    for entry in report.top_cells:
        entry["nucleus"] = nuclei.for_row(entry["row"], row_to_cell)
    report.review = review_in_report(report.top_cells, review_doc)  # None (no key) until a person has decided
    atomic_write(paths.html, render_html(report.to_dict(), summary, overview, crops, taxonomy))
    all_timings["report_s"] = round(time.perf_counter() - started, 2)
    report.write(paths.json)
    log.info("report written: %s", paths.html)
    return paths


def build_report(
    summary: SlideSummary, det: Detections, cfg: ReportConfig, properties: dict[str, str],
    timings: dict[str, float], slide_note: str, paths: ReportPaths,
) -> ReportDocument:
    """The ``report.json`` document (schema: docs/report.md). ``timings`` is kept by reference."""
    meta = det.meta or DetectionsMeta(taxonomy=[], complete=False)
    slide = meta.slide or SlideInfo()
    store = meta.store.to_dict() if meta.store else {}
    model = meta.model.to_dict() if meta.model else {}
    cells = [
        {"class": c.class_name, "rank": c.rank, "score": round(c.score, 4), "box": [round(v, 1) for v in c.box],
         "center": [round(v, 1) for v in c.center], "row": c.row, "patch_index": c.patch_index}
        for name in sorted(summary.top_cells, key=lambda n: -summary.by_name(n).severity)
        for c in summary.top_cells[name]
    ]
    return ReportDocument(
        generated_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        notice=RESEARCH_NOTICE,
        software={"name": "wsi_pipeline", "version": __version__, "python": platform.python_version()},
        slide=ReportSlide(
            name=slide.name, path=slide.path, width=slide.width, height=slide.height, mpp=slide.mpp,
            fingerprint=slide.fingerprint, vendor=slide.vendor, scanner_properties=properties,
            pixels_available=not slide_note, note=slide_note,
        ),
        tiling={k: v for k, v in store.items() if k != "path"},
        model={**{k: v for k, v in model.items() if k != "path"}, "file": Path(model["path"]).name if model.get("path") else ""},
        inference=meta.inference.to_dict() if meta.inference else {},
        thresholds={
            "score_threshold": cfg.score_threshold, "class_score_thresholds": dict(cfg.class_score_thresholds),
            "min_cells": cfg.min_cells, "class_min_cells": dict(cfg.class_min_cells),
        },
        n_detections=summary.n_detections,
        n_cells_counted=int(sum(c.n_counted for c in summary.classes)),
        cell_area_mm2=summary.cell_area_mm2,
        classes=[_rounded(c.__dict__) for c in summary.classes],
        category=summary.category,
        suspicion_score=round(summary.suspicion_score, 4),
        suspicion={"top_k": summary.suspicion_top_k, "formula": SUSPICION_FORMULA},
        adequacy=replace(summary.adequacy, note=ADEQUACY_NOTE),
        top_cells=cells,
        timings=timings,
        files=paths.files(),
    )


def _store_path(meta: DetectionsMeta, detections_path: str | Path) -> Path:
    """The patch store beside the detections (the usual layout), else where the detections say it was."""
    beside = Path(detections_path).with_name(STORE_NAME)
    recorded = meta.store.path if meta.store else None
    return beside if beside.exists() or not recorded else Path(recorded)


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def _slide_geometry(info: SlideInfo, slide: Slide | None, source: str | Path) -> tuple[tuple[int, int], float]:
    if slide is not None:
        return slide.dimensions, float(slide.mpp[0])
    mpp = info.mpp_x
    if not info.width or not info.height or not mpp:
        raise ArtifactError(source, "detections metadata lacks the slide size or mpp (slide.width/height/mpp)")
    return (int(info.width), int(info.height)), mpp


def _recorded_timings(meta: DetectionsMeta) -> dict[str, float]:
    """Stage seconds recorded in the artifacts: tiling in the store (section ``store``), detection in ``inference``."""
    recorded = {"tiling_s": meta.store.seconds if meta.store else None,
                "detection_s": meta.inference.seconds if meta.inference else None}
    return {k: float(v) for k, v in recorded.items() if isinstance(v, (int, float))}


__all__ = ["ReportPaths", "build_report", "filter_scanner_properties", "open_report_slide", "write_report"]
