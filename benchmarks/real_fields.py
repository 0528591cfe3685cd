"""Validation on real Pap fields the model never trained on: the numbers in docs/model_card.md.

Runs the whole pipeline (``wsi-run``'s per-slide path: tiling -> detection -> report) with a model on

* the 8 CRIC conventional Pap fields (187 nuclei with Bethesda labels): nucleus hits at the report
  thresholds - per-class recall, abnormal recall, NILM nuclei flagged abnormal - pooled and per field;
* the 8 CRIC fields mosaicked into one slide: the slide category (truth: LSIL, the most severe label);
* the 7 TCT fields of ``tct_marked`` (abnormal cells circled by a reader): is the most suspicious
  detection in a circle, and counted abnormal detections outside circles per field;
* optionally (``--demo``) the demo slide: planted real high-grade cells (held-out crops) found.

Pixel sizes of these sources are not recorded; the values used (``wsi_pipeline.benchmarking.real_fields``,
which also runs and scores the fields) were fixed from nucleus and neutrophil sizes before any model was
scored on them, and are never tuned on the results. Nothing here trains or picks thresholds: the report
thresholds of configs/default.yaml apply.

    python benchmarks/real_fields.py                          # bundled starter model
    python benchmarks/real_fields.py --model runs/starter/model.pt --json results/real_fields.json
    python benchmarks/real_fields.py --model runs/my_lab/model.pt --demo --out results/real_fields_my_lab
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import RESULTS, write_record
from wsi_pipeline.benchmarking.real_fields import CRIC_MPP, DATA, TCT_MPP, cric, cric_mosaic, tct_marked
from wsi_pipeline.config import load_config
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.taxonomy import load_taxonomy


def score_fields(model: Path, out: Path) -> dict:
    """CRIC nucleus hits, the CRIC mosaic call and the ``tct_marked`` ranking of ``model``, printed; the record."""
    cfg = load_config()
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    print(f"model: {model}\nreport thresholds: default {cfg.report.score_threshold} "
          f"(per class: {cfg.report.class_score_thresholds or 'none'}); CRIC at {CRIC_MPP} um/px, TCT at {TCT_MPP} um/px")

    c = cric(model, out, taxonomy, thresholds)
    print("\nCRIC fields (8 fields, nucleus hits at the report thresholds):")
    print(c["pooled"].table())
    print("per field (abnormal found, NILM flagged):", json.dumps(c["per_field"]))

    mosaic = cric_mosaic(model, out / "mosaic")
    print(f"\nCRIC mosaic slide call: {mosaic['category']} (truth {mosaic['truth']})")

    t = tct_marked(model, out, taxonomy, thresholds)
    top = sum(bool(v["top_in_circle"]) for v in t.values())
    outside = [v["counted_abnormal_outside"] for v in t.values()]
    print(f"\ntct_marked: most suspicious detection inside a circle in {top}/{len(t)} fields; "
          f"counted abnormal detections outside circles per field: {outside} (mean {np.mean(outside):.1f}); "
          f"rank of the best detection in a circle per field: {[v['best_circle_rank'] for v in t.values()]}")
    for name, v in t.items():
        print(f"  {name}: top in circle {v['top_in_circle']}, top score {v['top_score']}, "
              f"counted abnormal {v['counted_abnormal']} ({v['counted_abnormal_outside']} outside)")
    return {"model": str(model), "cric": c["pooled"].to_dict(), "cric_per_field": c["per_field"],
            "cric_mosaic": mosaic, "tct_marked": t, "tct_top_in_circle": f"{top}/{len(t)}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: bundled starter model)")
    ap.add_argument("--out", type=Path, default=RESULTS / "real_fields")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--demo", action="store_true", help="also run the demo slide (a few minutes on CPU)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir():
        print(f"real fields not found at {DATA}", file=sys.stderr)
        return 2
    model = args.model or starter_model_path()
    started = time.perf_counter()
    record = score_fields(model, args.out)
    if args.demo:
        from wsi_pipeline.demo import run_demo  # noqa: PLC0415

        run_demo(args.out / "demo", progress=False, model=model)
    print(f"\n{time.perf_counter() - started:.0f} s")
    write_record(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
