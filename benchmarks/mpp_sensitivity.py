"""How much of the validation result depends on the estimated pixel size of the real fields (a diagnostic).

The CRIC and ``tct_marked`` fields record no um/px; ``benchmarks/real_fields.py`` uses estimates fixed
from nucleus and neutrophil sizes before any model was scored (CRIC 0.30, TCT 0.45 um/px). A real
slide carries its pixel size, so if the result changed a lot with the estimate, part of the failure
would be the estimate's, not the model's. This script reruns the CRIC nucleus hits and the
``tct_marked`` ranking with both estimates multiplied by each FACTOR and prints one line per factor.

It is a diagnostic only: the pixel sizes in ``wsi_pipeline/benchmarking/real_fields.py`` stay as fixed,
whatever this prints, and nothing here is used to pick a threshold or a model.

    python benchmarks/mpp_sensitivity.py                                # bundled model, 0.8-1.25x
    python benchmarks/mpp_sensitivity.py --model runs/lab/model.pt --factors 0.9 1 1.1
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
from wsi_pipeline.benchmarking import RESULTS, real_fields, write_record
from wsi_pipeline.config import load_config
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.taxonomy import load_taxonomy


def at_factor(model: Path, out: Path, factor: float) -> dict:
    """CRIC hits and ``tct_marked`` ranking with both fields' pixel sizes multiplied by ``factor``."""
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, load_config().report)
    cric = real_fields.cric(model, out, taxonomy, thresholds, mpp=real_fields.CRIC_MPP * factor)["pooled"]
    tct = real_fields.tct_marked(model, out, taxonomy, thresholds, mpp=real_fields.TCT_MPP * factor)
    ranks = [v["best_circle_rank"] for v in tct.values()]
    outside = [v["counted_abnormal_outside"] for v in tct.values()]
    return {
        "factor": factor,
        "cric_mpp": round(real_fields.CRIC_MPP * factor, 3),
        "tct_mpp": round(real_fields.TCT_MPP * factor, 3),
        "cric_abnormal_found": f"{cric.abnormal_found}/{cric.abnormal_total}",
        "cric_nilm_flagged": f"{cric.nilm_flagged}/{cric.nilm_total}",
        "tct_top_in_circle": f"{sum(bool(v['top_in_circle']) for v in tct.values())}/{len(tct)}",
        "tct_outside_mean": round(float(np.mean(outside)), 1),
        "tct_best_circle_rank_median": float(np.median([r for r in ranks if r is not None])) if any(
            r is not None for r in ranks) else None,
        "tct_best_circle_rank": ranks,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: bundled starter model)")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.25],
                    help="multipliers of the estimated pixel sizes (default: 0.8 0.9 1 1.1 1.25)")
    ap.add_argument("--out", type=Path, default=RESULTS / "mpp_sensitivity")
    ap.add_argument("--json", type=Path, default=None, help="also write the lines here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not real_fields.DATA.is_dir():
        print(f"real fields not found at {real_fields.DATA}", file=sys.stderr)
        return 2
    model = args.model or starter_model_path()
    print(f"model: {model}; estimated pixel sizes CRIC {real_fields.CRIC_MPP}, TCT {real_fields.TCT_MPP} um/px (factor 1)")
    started = time.perf_counter()
    lines = []
    for factor in args.factors:
        line = at_factor(model, args.out / f"x{factor:g}", factor)
        lines.append(line)
        print(json.dumps(line), flush=True)
    print(f"{time.perf_counter() - started:.0f} s")
    write_record(args.json, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
