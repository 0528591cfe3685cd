"""`wsi review RUN_DIR`: open a slide's review page (review.html), building it when it is missing, and take
back a review.geojson saved from the page.

The page shows the slide's flagged cells (every counted abnormal cell, then the most suspicious others) at
full resolution; a person confirms, corrects or rejects each with one key. Decisions are kept in the browser
at once (per slide) and saved as review.geojson, which `wsi report` counts in the report and
`wsi data build --annotations review.geojson` turns into training data (docs/review.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import RESEARCH_NOTICE, HelpFormatter

log = logging.getLogger(__name__)

EPILOG = """examples:
  wsi review results/slide_a                      # open results/slide_a/review.html in the browser
  wsi review results/slide_a --no-open            # just print where the page is and the review's progress
  wsi review results/slide_a --import ~/Downloads/review.geojson   # the page's saved file, back into the folder
  wsi review results/slide_a --rebuild --limit 120   # rewrite the page with up to 120 flagged cells
  wsi review old_results/slide_b --slide /archive/slide_b.svs      # a folder from before review pages, slide moved
  wsi report results/slide_a/detections.parquet --out results/slide_a   # then the report shows the review counts
  wsi data build --out data/lab --slide slide_a.svs --annotations results/slide_a/review.geojson

keys on the page: 1-9, 0 pick a class (the model's = confirmed, another = corrected), Enter/A accept the
model's call, R then 1-5 reject (neutrophils, debris, normal, artefact, other), U undo, arrows/Space move,
N next pending, S save review.geojson (a download; move it next to review.html or use --import).

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("review", help="open a slide's review page (confirm, correct or reject its flagged cells)",
                       description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a slide's output folder (wsi-run or wsi report)")
    p.add_argument("--import", dest="import_file", metavar="FILE", type=Path, default=None,
                   help="a review.geojson saved from the page: its decisions go into RUN_DIR/review.geojson "
                        "(refused when it is another slide's) and the page is rewritten with them")
    p.add_argument("--rebuild", action="store_true", help="rewrite review.html (decisions already saved are kept)")
    p.add_argument("--limit", type=int, default=None,
                   help="flagged cells on a rebuilt page: every counted abnormal cell, then the most suspicious "
                        "others up to this many in all (default: report.review_cells of --config, 60)")
    p.add_argument("--slide", metavar="PATH", default=None, help="the slide file, when it has moved since the run")
    p.add_argument("--config", metavar="FILE", default=None, help="YAML config (report: thresholds and crop size)")
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import webbrowser  # noqa: PLC0415

    from ..config import load_config  # noqa: PLC0415
    from ..errors import ArtifactError, ConfigError  # noqa: PLC0415
    from ..export.review import REVIEW_GEOJSON_NAME, REVIEW_HTML_NAME, rebuild_review  # noqa: PLC0415
    from ..locking import stage_lock  # noqa: PLC0415
    from ..store import review as decisions  # noqa: PLC0415
    from ..store.artifacts import DETECTIONS_NAME  # noqa: PLC0415
    from ..store.detections import read_detections  # noqa: PLC0415
    from ..taxonomy import load_taxonomy  # noqa: PLC0415

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise ArtifactError(run_dir, "folder not found")
    if args.limit is not None and args.limit < 0:
        raise ConfigError(None, f"--limit must be >= 0, got {args.limit}")
    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    page, decisions_path = run_dir / REVIEW_HTML_NAME, run_dir / REVIEW_GEOJSON_NAME
    with stage_lock(run_dir):  # one writer per slide folder (docs/workflows.md)
        if args.import_file is not None:
            det_path = run_dir / DETECTIONS_NAME
            if not det_path.is_file():
                raise ArtifactError(run_dir, f"no {DETECTIONS_NAME} here: not a finished slide folder")
            slide = read_detections(det_path).meta.slide
            fingerprint = slide.fingerprint if slide else ""
            imported = decisions.read_review(args.import_file, fingerprint, slide.name if slide else run_dir.name)
            current = decisions.read_review(decisions_path, fingerprint) if decisions_path.is_file() else imported
            merged = decisions.merge(current, imported)
            decisions.write_review(decisions_path, merged)
            n = decisions.counts(imported)
            print(f"imported {args.import_file}: {n['confirmed']} confirmed, {n['corrected']} corrected, "
                  f"{n['rejected']} rejected, {n['pending']} pending -> {decisions_path}")
        if args.import_file is not None or args.rebuild or args.limit is not None or not page.is_file():
            rebuild_review(run_dir, taxonomy, cfg.report.review_cells if args.limit is None else args.limit, args.slide,
                           report_cfg=cfg.report, keep_page_without_pixels=page.is_file())
    if decisions_path.is_file():
        n = decisions.counts(json.loads(decisions_path.read_text()))
        print(f"{page}: {n['flagged']} flagged cells; {n['confirmed']} confirmed, {n['corrected']} corrected, "
              f"{n['rejected']} rejected, {n['pending']} pending")
    else:
        print(f"{page}")
    if not args.no_open:
        webbrowser.open(page.resolve().as_uri())
    return 0
