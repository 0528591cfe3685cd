"""File names of the artifacts stages exchange inside one slide's output folder (docs/artifacts.md).

The one place these names are defined: tiling, detection, report, the batch runner and the CLI
import them from here.
"""

from __future__ import annotations

STORE_NAME = "patches.zarr"  # stage 1: zarr patch store (store/patches.py)
MASK_NAME = "mask.png"  # stage 1: cell-area mask
DETECTIONS_NAME = "detections.parquet"  # stage 2: detections table (store/detections.py)
DETECTIONS_PARTIAL_NAME = "detections.partial"  # stage 2: resume folder of an unfinished detection run
REPORT_NAME = "report.json"  # stage 3: report document and completion marker of a slide
REPORT_HTML_NAME = "report.html"
REVIEW_HTML_NAME = "review.html"  # stage 3: the review page of the flagged cells (export/review.py, docs/review.md)
REVIEW_GEOJSON_NAME = "review.geojson"  # a reviewer's decisions (store/review.py); read by wsi report and wsi data build
RUN_LOG_NAME = "run.log"  # wsi-run: per-slide log
SUMMARY_CSV_NAME = "summary.csv"  # wsi-run / wsi summarize: batch summary, one row per slide
INDEX_HTML_NAME = "index.html"
