"""`wsi report`: a slide's detections -> report.html, report.json, cells.geojson/.xml/.csv."""

from __future__ import annotations

import argparse
import logging

from .common import RESEARCH_NOTICE, HelpFormatter

log = logging.getLogger(__name__)

EPILOG = """examples:
  wsi report work/slide/detections.parquet --out work/slide
  wsi report detections.parquet --out review/ --slide /archive/slides/slide.svs   # the slide has moved
  wsi report detections.parquet --out review/ --config lab.yaml   # lab thresholds (report: section)

writes (report.json last, as the completion marker):
  report.html    one self-contained page: category, adequacy, thumbnail, heat map, cell gallery
  report.json    the same numbers, versioned schema (docs/report.md)
  cells.geojson  QuPath detections (File > Import objects)
  cells.xml      ASAP annotations
  cells.csv      one row per cell, level-0 pixel coordinates
  review.html    the flagged cells, to confirm / correct / reject by key (`wsi review DIR` opens it)
  review.geojson the reviewer's decisions (kept across reruns; once there are some, the report counts them)

""" + RESEARCH_NOTICE


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="write the slide report and QuPath/ASAP/CSV exports from a detections table",
        description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("detections", metavar="DETECTIONS", help="detections.parquet written by `wsi detect`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the report files")
    p.add_argument("--config", metavar="FILE", help="YAML config; only the keys it changes (report: section)")
    p.add_argument("--slide", metavar="PATH", help="slide file, when it is no longer where the detections say")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..export import write_report
    from ..locking import stage_lock
    from ..taxonomy import load_taxonomy

    cfg = load_config(args.config)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    with stage_lock(args.out):  # one worker per output folder (docs/workflows.md)
        paths = write_report(args.detections, args.out, cfg.report, taxonomy, slide_path=args.slide)
    log.info("open %s in a browser; import %s into QuPath", paths.html, paths.geojson)
    return 0
