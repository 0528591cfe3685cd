"""Validation on real Pap fields the model never trained on: the numbers in docs/model_card.md.

Runs the whole pipeline (``wsi-run``'s per-slide path: tiling -> detection -> report) with a model on

* the 8 CRIC conventional Pap fields (187 nuclei with Bethesda labels): nucleus hits at the report
  thresholds - per-class recall, abnormal recall, NILM nuclei flagged abnormal - pooled and per field;
* the 8 CRIC fields mosaicked into one slide: the slide category (truth: LSIL, the most severe label);
* the 7 TCT fields of ``tct_marked`` (abnormal cells circled by a reader): is the most suspicious
  detection in a circle, and counted abnormal detections outside circles per field;
* optionally (``--demo``) the demo slide: planted real high-grade cells (held-out crops) found.

Pixel sizes of these sources are not recorded; the values below were fixed from nucleus and
neutrophil sizes before any model was scored on them, and are never tuned on the results. Nothing
here trains or picks thresholds: the report thresholds of configs/default.yaml apply.

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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsi_pipeline.aggregate.summary import class_thresholds  # noqa: E402
from wsi_pipeline.config import load_config  # noqa: E402
from wsi_pipeline.datasets.annotations import load_annotations  # noqa: E402
from wsi_pipeline.models.bundled import starter_model_path  # noqa: E402
from wsi_pipeline.models.cell_hits import NucleusHitResult, circle_ranking, nucleus_hits, truth_from_annotations  # noqa: E402
from wsi_pipeline.pipeline import RunOptions, run_slide  # noqa: E402
from wsi_pipeline.store.detections import read_detections  # noqa: E402
from wsi_pipeline.synth.config import load_synth_config  # noqa: E402
from wsi_pipeline.taxonomy import load_taxonomy  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cytology"
CRIC_MPP = 0.30  # neutrophils ~30 px (~10 um), intermediate squamous cells 150-180 px (~50 um)
TCT_MPP = 0.45  # MANIFEST: "about 0.4-0.5 um/px judging by nuclei"; nuclei ~1.6-1.9x smaller than lbc_field's


def run_field(image: Path, out: Path, model: Path, mpp: float) -> Path:
    cfg = load_config(overrides={"tiling": {"scheduler": "threads"}})
    outcome = run_slide(image, out, cfg, RunOptions(model=model, mpp=mpp, progress=False, force=True))
    if not outcome.ok:
        raise SystemExit(f"error: {image}: {outcome.reason}")
    return Path(outcome.out_dir)


def cric_fields() -> list[Path]:
    return sorted((DATA / "cric").glob("*.webp"))


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


def tct_marked(model: Path, out: Path, taxonomy, thresholds, mpp: float = TCT_MPP) -> dict:
    marks = json.loads((DATA / "tct_marked" / "marks.json").read_text())["fields"]
    fields = {}
    for name, circles in sorted(marks.items()):
        det = read_detections(run_field(DATA / "tct_marked" / name, out / "tct", model, mpp) / "detections.parquet")
        r = circle_ranking(det.boxes, det.class_scores, det.labels, det.scores, thresholds, taxonomy,
                           [tuple(c) for c in circles])
        fields[name] = {"top_in_circle": r.top_in_circle, "top_score": r.top_score,
                        "counted_abnormal": r.counted_abnormal, "counted_abnormal_outside": r.counted_abnormal_outside,
                        "best_circle_rank": r.best_circle_rank}
    return fields


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
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_fields")
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
