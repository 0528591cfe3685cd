"""Issue 23: do 1024 px tiles keep the default's recall once the report threshold is calibrated on training fields?

``benchmarks/cpu_tiles.py --views`` showed that the default (256 px tiles, 128 px overlap) sees each cell in
about 4 tiles and keeps its best view, and that 1024 px tiles (each cell seen ~1.3 times) lose ~0.06 of the
abnormal nuclei it finds, while flagging fewer NILM nuclei: the extra views act like a lower threshold. If so,
1024 px tiles with a lower report threshold should reach the same operating point for about a third of the
network's work per mm². This measures that, with the threshold chosen on training fields only.

**Method, fixed before the first run.** Settings A (256/128, the default) and B (1024/128), both onnxruntime, the
bundled model (or ``--model``). Each field runs once per setting (``wsi-run``'s per-slide path; detections kept
from score 0.05, so thresholds are applied afterwards):

1. *calibration* on the first ``--train-fields`` (40) ``cric_fields`` images on the training side of
   ``configs/splits/cric.csv`` (sorted): A's abnormal nuclei found at the report threshold 0.5; B's threshold
   ``t_B`` is the highest of 0.30, 0.32, ..., 0.50 (one value for every class) at which B finds at least as many;
2. *validation* on the 53 annotated validation fields: A at 0.5, B at 0.5 and B at ``t_B``.

**Rule, fixed before the first run.** "1024 px tiles at ``t_B``" is a candidate default only if, on the validation
fields, its abnormal nuclei found are within 0.02 (of the annotated abnormal nuclei) of A's, its NILM nuclei
flagged are <= 0.10 of the NILM nuclei, and its high grade as high grade is not lower than A's minus 0.02. The
speed side is measured by ``benchmarks/cpu_tiles.py``; nothing is tuned on the validation fields.

    python benchmarks/large_tiles_calibrated.py --json benchmarks/results/large_tiles_calibrated.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from wsi_pipeline.aggregate.cell_hits import NucleusHitResult, nucleus_hits, truth_from_annotations
from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import RESULTS, portable_path, write_record
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS, run_field, split_fields, validation_fields
from wsi_pipeline.config import ReportConfig
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.store.detections import Detections, read_detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

log = logging.getLogger("large_tiles_calibrated")

SETTINGS = {"A 256/128": (256, 128), "B 1024/128": (1024, 128)}
GRID = [round(0.30 + 0.02 * i, 2) for i in range(11)]  # 0.30 .. 0.50
DEFAULT_THRESHOLD = 0.5


def field_runs(model: Path, out: Path, fields: list[Path], tile: int, overlap: int, taxonomy) -> list[tuple[Detections, list]]:
    """Each field run once with ``tile``/``overlap``: its detections and annotated nuclei."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    overrides = {"tiling": {"patch_size": tile, "overlap": overlap}, "inference": {"backend": "onnxruntime"}}
    runs = []
    for i, image in enumerate(fields, 1):
        folder = run_field(image, out, model, mpp[image.stem], overrides)
        truth = truth_from_annotations(load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True))
        runs.append((read_detections(folder / "detections.parquet"), truth))
        if i % 10 == 0 or i == len(fields):
            log.info("%s %d/%s: %d/%d fields", out.parent.name, tile, overlap, i, len(fields))
    return runs


def pooled(runs: list[tuple[Detections, list]], threshold: float, taxonomy) -> NucleusHitResult:
    thresholds, _ = class_thresholds(taxonomy, ReportConfig(score_threshold=threshold))
    total = NucleusHitResult()
    for det, truth in runs:
        total = total.add(nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth))
    return total


def summary(h: NucleusHitResult) -> dict:
    return {"abnormal_found": h.abnormal_found, "abnormal_total": h.abnormal_total, "nilm_flagged": h.nilm_flagged,
            "nilm_total": h.nilm_total, "high_grade_found": h.high_grade_found, "high_grade_total": h.high_grade_total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled starter model)")
    ap.add_argument("--train-fields", type=int, default=40, help="training fields the threshold is calibrated on")
    ap.add_argument("--val-fields", type=int, default=None, help="only the first N validation fields (a quick look)")
    ap.add_argument("--out", type=Path, default=RESULTS / "large_tiles_calibrated")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("wsi_pipeline").setLevel(logging.ERROR)
    started = time.perf_counter()
    taxonomy = load_taxonomy()
    model = args.model or starter_model_path()
    sides = {"train": split_fields("train", args.train_fields), "val": validation_fields(args.val_fields)}
    runs = {(side, name): field_runs(model, args.out / side / name.split()[0], fields, *SETTINGS[name], taxonomy)
            for side, fields in sides.items() for name in SETTINGS}
    a_name, b_name = SETTINGS
    target = pooled(runs["train", a_name], DEFAULT_THRESHOLD, taxonomy).abnormal_found
    train_curve = {t: summary(pooled(runs["train", b_name], t, taxonomy)) for t in GRID}
    reaching = [t for t in GRID if train_curve[t]["abnormal_found"] >= target]
    t_b = max(reaching) if reaching else min(GRID)
    val = {"A 256/128 at 0.5": summary(pooled(runs["val", a_name], DEFAULT_THRESHOLD, taxonomy)),
           "B 1024/128 at 0.5": summary(pooled(runs["val", b_name], DEFAULT_THRESHOLD, taxonomy)),
           f"B 1024/128 at {t_b}": summary(pooled(runs["val", b_name], t_b, taxonomy))}
    a, b = val["A 256/128 at 0.5"], val[f"B 1024/128 at {t_b}"]
    checks = {"abnormal found within 0.02": b["abnormal_found"] >= a["abnormal_found"] - 0.02 * a["abnormal_total"],
              "NILM flagged <= 0.10": b["nilm_flagged"] <= 0.10 * b["nilm_total"],
              "high grade not lower - 0.02": b["high_grade_found"] >= a["high_grade_found"] - 0.02 * a["high_grade_total"]}
    failed = [k for k, ok in checks.items() if not ok]
    print(f"calibration on {len(sides['train'])} training fields: A finds {target} abnormal nuclei at 0.5; "
          f"B reaches it at threshold {t_b}" + ("" if reaching else " (never: the lowest threshold is used)"))
    print(f"\n{len(sides['val'])} CRIC validation fields:\n| setting | abnormal found | NILM flagged | high grade as high grade |"
          "\n|---|---|---|---|")
    for name, r in val.items():
        print(f"| {name} | {r['abnormal_found']}/{r['abnormal_total']} | {r['nilm_flagged']}/{r['nilm_total']} "
              f"| {r['high_grade_found']}/{r['high_grade_total']} |")
    print(f"candidate default: {'yes' if not failed else 'no'}" + (f" (failed: {'; '.join(failed)})" if failed else ""))
    write_record(args.json, {"model": portable_path(model), "train_fields": len(sides["train"]), "val_fields": len(sides["val"]),
                             "train_target": target, "train_curve_b": train_curve, "threshold_b": t_b,
                             "validation": val, "candidate": not failed, "failed": failed,
                             "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
