"""Whole-slide runs: tiling -> detection -> report for one slide or a batch.

Each stage resumes from its own on-disk artifact (patch store, detections table, report.json),
so rerunning the same command after an interruption only does what is missing. A batch records a
failing slide with its reason and goes on.

Example:
    >>> from wsi_pipeline.pipeline import find_slides
    >>> find_slides(["does-not-exist/"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    wsi_pipeline.errors.WsiError: does-not-exist/: no such file or folder
"""

from __future__ import annotations

import csv
import glob
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import PipelineConfig, TilingConfig
from .diskspace import DiskFullError, describe_os_error, is_disk_full, remove_temp_files
from .errors import WsiError
from .fsutil import atomic_path, atomic_write
from .slide_formats import image_extensions, slide_extensions
from .store.artifacts import (
    DETECTIONS_NAME,
    INDEX_HTML_NAME,
    REPORT_HTML_NAME,
    REPORT_NAME,
    REVIEW_HTML_NAME,
    RUN_LOG_NAME,
    STORE_NAME,
    SUMMARY_CSV_NAME,
)
from .store.contracts import ModelMeta
from .store.review import summary_text
from .locking import SlideBusy, SlideLock
from .progress import progress_bar
from .taxonomy import load_taxonomy

log = logging.getLogger(__name__)

# extensions of the registered slide formats (slide_formats.py); a plain image needs --mpp
SLIDE_EXTENSIONS = slide_extensions()
IMAGE_EXTENSIONS = image_extensions()


@dataclass
class RunOptions:
    """What ``wsi-run`` was asked to do, beyond the YAML config."""

    model: Path
    device: str = "auto"
    scheduler: str | None = None  # None: the config's tiling.scheduler
    workers: int | None = None
    mpp: float | None = None
    force: bool = False
    keep_store: bool = True
    progress: bool = True
    wait: bool = False  # another process works on the slide: wait for it (True) or skip it (False)
    space_check: bool = True  # refuse a slide early when its patch store estimate does not fit on the disk


@dataclass
class SlideOutcome:
    slide: str
    out_dir: str
    status: str  # ok | skipped (already complete) | failed
    reason: str = ""
    category: str = ""
    suspicion: float | None = None
    adequacy: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    report_html: str = ""
    disk_full: bool = False  # failed for want of disk space: a batch stops starting new slides
    review: str = ""  # a person's review of the flagged cells, once there is one (report.json ``review``)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


def slide_out_dir(out_root: Path, slide: Path) -> Path:
    """``OUT/<slide name>``; a DICOM slide (a folder of instances) is named after its folder."""
    name = slide.parent.name if slide.suffix.lower() == ".dcm" else slide.name
    for ext in sorted(SLIDE_EXTENSIONS | IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return out_root / name


def find_slides(inputs: list[str], include_images: bool = False) -> list[Path]:
    """Slides named by ``inputs``: files, folders (not recursive), globs, or ``.txt`` lists of paths.

    DICOM instances of one folder count as one slide (OpenSlide finds the others).
    """
    found: list[Path] = []
    exts = SLIDE_EXTENSIONS | (IMAGE_EXTENSIONS if include_images else set())
    for item in inputs:
        path = Path(item)
        if any(ch in item for ch in "*?["):
            found += [Path(p) for p in sorted(glob.glob(item)) if Path(p).is_file()]
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and _has_ext(p, exts))
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            found += [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
        elif path.exists() or path.suffix:
            found.append(path)  # a missing file is reported by the reader, with its name
        else:
            raise WsiError(item, "no such file or folder")
    unique: list[Path] = []
    dicom_dirs: set[Path] = set()
    for p in found:
        if p.suffix.lower() == ".dcm":
            if p.parent in dicom_dirs:
                continue
            dicom_dirs.add(p.parent)
        if p not in unique:
            unique.append(p)
    return unique


def _has_ext(path: Path, exts: set[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(e) for e in exts)


def run_batch(slides: list[Path], out_root: Path, cfg: PipelineConfig, opts: RunOptions) -> list[SlideOutcome]:
    """Run every slide (locally, or one task per slide on a dask.distributed cluster); a failing slide is
    recorded and the batch goes on."""
    if opts.scheduler and "://" in opts.scheduler:
        return _run_on_cluster(slides, out_root, cfg, opts)
    outcomes: list[SlideOutcome] = []
    bar = progress_bar(slides, desc="slides", unit="slide", disable=not opts.progress or len(slides) < 2)
    for slide in bar:
        if outcomes and outcomes[-1].disk_full:  # no new slide on a full disk; a rerun resumes from here
            outcomes.append(SlideOutcome(slide=str(slide), out_dir=str(slide_out_dir(out_root, slide)), status="failed",
                                         reason=f"{slide}: not started: the disk is full", disk_full=True))
            continue
        bar.set_postfix_str(slide.name)
        outcomes.append(run_slide(slide, out_root, cfg, opts))
    return outcomes


def _run_on_cluster(slides: list[Path], out_root: Path, cfg: PipelineConfig, opts: RunOptions) -> list[SlideOutcome]:
    """One task per slide on a dask.distributed cluster; workers need the slides and OUT on a shared filesystem."""
    from distributed import Client, as_completed

    worker_opts = replace(opts, scheduler="threads", progress=False)
    with Client(opts.scheduler) as client:
        log.info("submitting %d slides to %s", len(slides), opts.scheduler)
        futures = [client.submit(run_slide, s.resolve(), out_root.resolve(), cfg, worker_opts, pure=False) for s in slides]
        done = {}
        for fut in progress_bar(as_completed(futures), total=len(futures), desc="slides", unit="slide", disable=not opts.progress):
            o = fut.result()
            done[o.slide] = o
    return [done[str(s.resolve())] for s in slides]


def run_slide(slide: Path, out_root: Path, cfg: PipelineConfig, opts: RunOptions) -> SlideOutcome:
    """Tile, detect and report one slide into ``out_root/<name>``; never raises for a bad slide."""
    out_dir = slide_out_dir(out_root, slide)
    outcome = SlideOutcome(slide=str(slide), out_dir=str(out_dir), status="failed")
    report_json = out_dir / REPORT_NAME
    if report_json.is_file() and not opts.force:
        return _outcome_from_report(outcome, report_json, status="skipped")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = SlideLock(out_dir).acquire(wait=opts.wait)  # one worker per slide folder (docs/workflows.md)
    except SlideBusy as exc:
        log.warning("%s", exc)
        outcome.status, outcome.reason = "skipped", exc.reason
        return outcome
    except OSError as exc:
        outcome.reason = f"{slide}: {describe_os_error(exc, out_dir)}"
        outcome.disk_full = is_disk_full(exc)
        log.error("%s", outcome.reason)
        return outcome
    with lock:
        if report_json.is_file() and not opts.force:  # another worker finished it while we waited
            return _outcome_from_report(outcome, report_json, status="skipped")
        return _run_locked(slide, out_dir, cfg, opts, outcome)


def _run_locked(slide: Path, out_dir: Path, cfg: PipelineConfig, opts: RunOptions, outcome: SlideOutcome) -> SlideOutcome:
    report_json = out_dir / REPORT_NAME
    try:
        handler = _file_log(out_dir / RUN_LOG_NAME)
    except OSError as exc:
        outcome.reason = f"{slide}: {describe_os_error(exc, out_dir)}"
        outcome.disk_full = is_disk_full(exc)
        log.error("%s", outcome.reason)
        return outcome
    try:
        outcome.timings = _run_stages(slide, out_dir, cfg, opts)
        _outcome_from_report(outcome, report_json, status="ok")
        if not opts.keep_store:
            shutil.rmtree(out_dir / STORE_NAME, ignore_errors=True)
    except WsiError as exc:
        outcome.reason = str(exc)
        outcome.disk_full = isinstance(exc, DiskFullError)
        log.error("%s", exc)
    except OSError as exc:  # disk full, permissions, I/O: one line, nothing marked complete, no half-written files
        outcome.reason = f"{slide}: {describe_os_error(exc, out_dir)}"
        outcome.disk_full = is_disk_full(exc)
        log.error("%s", outcome.reason)
        _traceback_to(handler)
        remove_temp_files(out_dir)
    except Exception as exc:  # a bug or an unexpected library failure: record it, keep the batch going
        outcome.disk_full = is_disk_full(exc)
        outcome.reason = f"{slide}: unexpected {exc.__class__.__name__}: {exc} (traceback in {out_dir / 'run.log'})"
        log.error("%s", outcome.reason)
        _traceback_to(handler)
        remove_temp_files(out_dir)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return outcome


def _run_stages(slide: Path, out_dir: Path, cfg: PipelineConfig, opts: RunOptions) -> dict[str, float]:
    # imported here so `wsi-run --help` stays fast
    from .export import write_report
    from .inference.engine import detect_store, load_model
    from .models.checkpoint import parse_model_meta
    from .tiling import tile_slide

    timings: dict[str, float] = {}
    model = load_model(opts.model)  # the network is built once per slide; detection moves it to its device
    meta = parse_model_meta(model.meta, opts.model)
    tiling = _fit_slide(slide, tiling_for_model(cfg.tiling, meta), opts.mpp, int(meta.patch_size))
    if opts.workers is not None:
        tiling = replace(tiling, workers=opts.workers)
    if opts.scheduler:
        tiling = replace(tiling, scheduler=opts.scheduler)

    if opts.space_check:
        _check_space(slide, out_dir, tiling, opts.mpp)

    t = time.perf_counter()
    log.info("%s: stage 1/3 tiling", slide.name)
    tile_slide(slide, out_dir, tiling, mpp=opts.mpp, progress=opts.progress)
    timings["tiling_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    log.info("%s: stage 2/3 detection", slide.name)
    inference = replace(cfg.inference, device=opts.device) if opts.device else cfg.inference
    detect_store(out_dir / STORE_NAME, model, out_dir, inference, progress=opts.progress)
    timings["detection_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    log.info("%s: stage 3/3 report", slide.name)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    timings["report_s"] = 0.0
    write_report(out_dir / DETECTIONS_NAME, out_dir, cfg.report, taxonomy, slide_path=slide, timings=timings)
    timings["report_s"] = round(time.perf_counter() - t, 2)
    return timings


def _check_space(slide: Path, out_dir: Path, tiling: TilingConfig, mpp: float | None) -> None:
    """Refuse the slide before any work when its patch store (dry-run estimate) will not fit."""
    from .diskspace import check_free_space
    from .io import open_slide

    with open_slide(slide, mpp=mpp) as sl:
        _, estimate = store_estimate(sl, tiling)
    check_free_space(out_dir, estimate, out_dir / STORE_NAME, str(slide))


def store_estimate(sl: Any, tiling: TilingConfig) -> tuple[int, float]:
    """Patches in the slide's full grid (an upper bound before the cell-area mask) and the store's bytes."""
    from .tiling.grid import GridSpec, grid_positions

    w, h = sl.dimensions
    spec = GridSpec(tiling.patch_size, tiling.overlap, tiling.target_mpp, sl.mpp[0])
    n = len(grid_positions(w, h, spec))  # the grid `wsi tile` cuts, before the cell-area mask
    # JPEG patches: a conservative 12x smaller than raw RGB (45x measured on a real TCT field, docs/store.md)
    ratio = 12 if tiling.codec == "jpeg" else 1
    return n, n * tiling.patch_size**2 * 3 / ratio


def tiling_for_model(tiling: TilingConfig, meta: ModelMeta) -> TilingConfig:
    """Tiling settings for a detector: its resolution, the configured tile size, the same physical overlap.

    The detector's ``target_mpp`` is imposed (it must see pixels of the size it was trained on). Its
    training patch size is not: the detectors are fully convolutional, so ``tiling.patch_size`` (px at
    that resolution) is used as it is; larger tiles see fewer pixels twice (docs/inference.md). The
    configured overlap is in px at the configured ``target_mpp``; it is rescaled so that it keeps its
    size in micrometres (it must hold the largest cell of interest), and kept below half a tile.

    Example:
        >>> meta = ModelMeta(taxonomy=["NILM"], target_mpp=1.0, patch_size=256)
        >>> t = tiling_for_model(TilingConfig(target_mpp=0.5, patch_size=1024, overlap=128), meta)
        >>> t.target_mpp, t.patch_size, t.overlap
        (1.0, 1024, 64)
    """
    target = float(meta.target_mpp)
    patch = int(tiling.patch_size)
    overlap = min(round(tiling.overlap * tiling.target_mpp / target), patch // 2 - 1)
    return replace(tiling, target_mpp=target, patch_size=patch, overlap=max(0, overlap))


def fit_tile_to_slide(tiling: TilingConfig, width: int, height: int, slide_mpp: float, min_patch: int) -> TilingConfig:
    """A tile no larger than the slide: a slide (or field image) smaller than one ``tiling.patch_size`` tile
    gets tiles of its short side (a multiple of 32 px, at least ``min_patch``, the model's training patch),
    instead of being refused; the overlap stays below half a tile.

    Example:
        >>> t = fit_tile_to_slide(TilingConfig(patch_size=1024, overlap=128), 1376, 1020, 0.3, 256)
        >>> t.patch_size, t.overlap
        (608, 128)
    """
    short = int(min(width, height) * slide_mpp / tiling.target_mpp)
    if short >= tiling.patch_size:
        return tiling
    patch = max(min_patch, short // 32 * 32)
    return replace(tiling, patch_size=patch, overlap=max(0, min(tiling.overlap, patch // 2 - 1)))


def _fit_slide(slide: Path, tiling: TilingConfig, mpp: float | None, min_patch: int) -> TilingConfig:
    """:func:`fit_tile_to_slide` for a slide file (a slide that cannot be opened is reported by tiling)."""
    from .io import open_slide

    try:
        with open_slide(slide, mpp=mpp) as sl:
            return fit_tile_to_slide(tiling, *sl.dimensions, sl.mpp[0], min_patch)
    except WsiError:
        return tiling


def _outcome_from_report(outcome: SlideOutcome, report_json: Path, status: str) -> SlideOutcome:
    from .export.document import ReportDocument

    report = ReportDocument.read(report_json)
    outcome.status = status
    outcome.category = report.category.name
    outcome.suspicion = report.suspicion_score
    outcome.adequacy = report.adequacy.status
    specimen = report.specimen
    if specimen is not None and specimen.status != "ok":  # listed in summary.csv and index.html
        outcome.reason = f"specimen check: {specimen.status}: {specimen.reason}"
    outcome.timings = outcome.timings or dict(report.timings)
    outcome.review = summary_text(report.review)
    html_path = report_json.with_name(REPORT_HTML_NAME)
    outcome.report_html = str(html_path) if html_path.is_file() else ""
    return outcome


def _traceback_to(handler: logging.Handler) -> None:
    """The current exception's traceback into the slide's run.log only (the terminal gets one line)."""
    handler.handle(logging.LogRecord(__name__, logging.ERROR, __file__, 0, "traceback", None, sys.exc_info()))


def _file_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


SUMMARY_FIELDS = ["slide", "status", "category", "suspicion", "adequacy", "tiling_s", "detection_s", "report_s",
                  "reason", "report_html", "out_dir", "review"]


def write_summary(out_root: Path, outcomes: list[SlideOutcome]) -> tuple[Path, Path]:
    """``summary.csv`` and ``index.html`` listing every slide, most suspicious first, failures last."""
    rows = sorted(outcomes, key=lambda o: (not o.ok, -(o.suspicion or 0.0), o.slide))
    out_root.mkdir(parents=True, exist_ok=True)
    csv_path = out_root / SUMMARY_CSV_NAME
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for o in rows:
            d = asdict(o)
            d.update({k: o.timings.get(k, "") for k in ("tiling_s", "detection_s", "report_s")})
            d["suspicion"] = "" if o.suspicion is None else f"{o.suspicion:.4f}"
            writer.writerow({k: d.get(k, "") for k in SUMMARY_FIELDS})
    html_path = atomic_write(out_root / INDEX_HTML_NAME, _index_html(rows, out_root))
    return csv_path, html_path


def _index_html(rows: list[SlideOutcome], out_root: Path) -> str:
    from .export.html import render_index

    root = out_root.resolve()

    def href(o: SlideOutcome) -> str:
        if not o.report_html:
            return ""
        target = Path(o.report_html).resolve()
        return str(target.relative_to(root) if target.is_relative_to(root) else target)  # relative: the folder can move

    def review_href(o: SlideOutcome) -> str:
        page = (Path(o.out_dir) / REVIEW_HTML_NAME).resolve()
        return "" if not page.is_file() else str(page.relative_to(root) if page.is_relative_to(root) else page)

    table = [
        {"name": Path(o.slide).name, "href": href(o), "status": o.status, "category": o.category,
         "suspicion": "" if o.suspicion is None else f"{o.suspicion:.3f}", "adequacy": o.adequacy,
         "seconds": f"{sum(v for v in o.timings.values() if isinstance(v, (int, float))):.1f}", "reason": o.reason,
         "review": o.review, "review_href": review_href(o)}
        for o in rows
    ]
    return render_index(table, n_ok=sum(o.ok for o in rows))


def collect_outcomes(out_root: Path) -> list[SlideOutcome]:
    """Outcomes of every finished slide folder under ``out_root`` (for cohort summaries)."""
    outcomes = []
    from .export.document import ReportDocument

    for report_json in sorted(out_root.glob(f"*/{REPORT_NAME}")):
        slide = ReportDocument.read(report_json).slide.path or report_json.parent.name
        o = SlideOutcome(slide=slide, out_dir=str(report_json.parent), status="ok")
        outcomes.append(_outcome_from_report(o, report_json, status="ok"))
    return outcomes


def plan(slides: list[Path], cfg: PipelineConfig, meta: ModelMeta, mpp: float | None) -> list[dict]:
    """Dry run: for each slide, the patch grid it would be cut into (an upper bound before masking)."""
    from .io import open_slide

    tiling = tiling_for_model(cfg.tiling, meta)
    rows = []
    for s in slides:
        try:
            with open_slide(s, mpp=mpp) as sl:
                w, h = sl.dimensions
                n, disk = store_estimate(sl, fit_tile_to_slide(tiling, w, h, sl.mpp[0], int(meta.patch_size)))
                rows.append({"slide": str(s), "size": f"{w}x{h}", "mpp": round(sl.mpp[0], 4),
                             "max_patches": n, "disk_mb": round(disk / 1e6, 1), "status": "ok"})
        except WsiError as exc:
            rows.append({"slide": str(s), "size": "", "mpp": "", "max_patches": 0, "disk_mb": 0.0, "status": str(exc)})
    return rows
