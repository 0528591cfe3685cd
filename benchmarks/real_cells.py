"""The real-cells targets of a model, on fields it never trained on: the numbers of docs/model_card.md.

Runs the whole pipeline (``wsi-run``'s per-slide path) with each model given, in the same run, on

* the **validation side** of ``configs/splits/cric.csv`` among ``cric_fields/`` (conventional Pap,
  each field at its ``mpp_estimate`` from ``fields.csv``): nucleus hits at the report thresholds
  (per class, abnormal found as abnormal, NILM flagged abnormal, ASC-H/HSIL/SCC found as one of
  those three), and the report's squamous-cell count against the annotated squamous nuclei;
* ``tct_marked`` (liquid-based, circled abnormal cells, 0.45 um/px): is the top abnormal call in a
  circle, counted abnormal calls outside circles;
* with ``--demo``, the demo slide: planted real high-grade cells found.

Nothing here trains or tunes a threshold: the report thresholds of configs/default.yaml apply.

    python benchmarks/real_cells.py --model runs/starter_v3/model.pt --baseline starter --demo \\
        --json benchmarks/results/real_cells_v3.json
    python benchmarks/real_cells.py --fields 5          # a quick look: the first 5 validation fields
    python benchmarks/real_cells.py --config configs/fast_cpu.yaml --demo   # a settings profile instead of the defaults

With ``--config``, that YAML (tiling, inference, report thresholds) applies on top of configs/default.yaml
everywhere: the fields, ``tct_marked``, the demo and the thresholds that score them. With
``--conventional-config``, a second YAML applies on top of that to the CRIC fields only (conventional Pap), so
each preparation type runs and is scored with its own profile, as a lab would run it:

    python benchmarks/real_cells.py --conventional-config configs/conventional_pap.yaml --demo
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
from wsi_pipeline.benchmarking import CRIC_SPLIT as SPLIT, portable_path, write_record
from wsi_pipeline.benchmarking import PROJECT as ROOT
from wsi_pipeline.benchmarking import RESULTS
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS as FIELDS
from wsi_pipeline.benchmarking.real_fields import run_field, tct_marked, validation_fields
from wsi_pipeline.config import load_config, merge, read_yaml
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.errors import WsiError
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.aggregate.cell_hits import NucleusHitResult, nucleus_hits, truth_from_annotations
from wsi_pipeline.store.detections import read_detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy


def cric_validation(model: Path, out: Path, taxonomy, thresholds, fields: list[Path], overrides: dict | None = None) -> dict:
    """Nucleus hits and squamous counts of ``model`` on the CRIC validation ``fields``."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(FIELDS / "fields.csv")
    squamous = {c.name for c in taxonomy.classes if c.group == "squamous"}
    pooled, per_field = NucleusHitResult(), {}
    counted_squamous = annotated_squamous = 0
    for image in fields:
        run = run_field(image, out, model, mpp[image.stem], overrides)
        det = read_detections(run / "detections.parquet")
        cells = load_annotations(FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True)
        hits = nucleus_hits(det.boxes, det.labels, det.scores, thresholds, taxonomy, truth_from_annotations(cells))
        report = json.loads((run / "report.json").read_text())
        counted = int(report["adequacy"]["squamous_cells"])
        annotated = sum(c.class_name in squamous for c in cells)
        counted_squamous += counted
        annotated_squamous += annotated
        per_field[image.stem[:8]] = {"abnormal": f"{hits.abnormal_found}/{hits.abnormal_total}",
                                     "nilm_flagged": f"{hits.nilm_flagged}/{hits.nilm_total}",
                                     "squamous": f"{counted}/{annotated}"}
        pooled = pooled.add(hits)
    return {"fields": len(fields), "hits": pooled.to_dict(), "table": pooled.table(), "per_field": per_field,
            "squamous_counted": counted_squamous, "squamous_annotated": annotated_squamous}


def score_model(model: Path, out: Path, fields: list[Path], demo: bool, overrides: dict | None = None,
                conventional: dict | None = None) -> dict:
    """The targets of ``model``; ``conventional`` settings go on top of ``overrides`` for the CRIC fields only."""
    cfg = load_config(overrides=overrides)
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    started = time.perf_counter()
    record: dict = {"model": portable_path(model)}
    cric_overrides = merge(overrides or {}, conventional) if conventional else overrides
    cric_thresholds = class_thresholds(taxonomy, load_config(overrides=cric_overrides).report)[0] if conventional else thresholds
    record["cric_val"] = cric_validation(model, out / "cric_val", taxonomy, cric_thresholds, fields, cric_overrides)
    t = tct_marked(model, out, taxonomy, thresholds, overrides=overrides)
    outside = [v["counted_abnormal_outside"] for v in t.values()]
    record["tct_marked"] = {"top_in_circle": sum(bool(v["top_in_circle"]) for v in t.values()), "fields": len(t),
                            "outside_mean": float(np.mean(outside)), "outside": outside,
                            "best_circle_rank": [v["best_circle_rank"] for v in t.values()]}
    if demo:
        from wsi_pipeline.demo import demo_slide_run  # noqa: PLC0415

        d = demo_slide_run(out / "demo", progress=False, model=model, config=cfg)
        record["demo"] = {"found": d.recall.found, "planted": d.recall.planted, "category": d.category, "truth": d.truth}
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def model_label(model: str) -> str:
    """``bundled`` for the package's model, else the run folder of a ``model.pt`` (or the file name)."""
    path = Path(model)
    if path.name == starter_model_path().name:
        return "bundled"
    return path.parent.name if path.name == "model.pt" else path.name


def fraction(value: float | None) -> str:
    """A recall to two decimals; ``-`` where there was nothing to find (a quick look at a few fields)."""
    return "-" if value is None else f"{value:.2f}"


def summary_table(records: list[dict]) -> str:
    """One markdown row per model: the issue's targets."""
    lines = ["| model | abnormal found | NILM flagged | high grade as high grade | squamous counted / annotated | "
             "tct_marked top-1 in circle | outside circles, mean | demo high grade found |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        h, c, t = r["cric_val"]["hits"], r["cric_val"], r["tct_marked"]
        demo = f"{r['demo']['found']}/{r['demo']['planted']}" if "demo" in r else "-"
        lines.append(f"| {r.get('label') or model_label(r['model'])} "
                     f"| {h['abnormal_found']}/{h['abnormal_total']} ({fraction(h['abnormal_recall'])}) "
                     f"| {h['nilm_flagged']}/{h['nilm_total']} ({fraction(h['nilm_flagged_fraction'])}) "
                     f"| {h['high_grade_found']}/{h['high_grade_total']} ({fraction(h['high_grade_recall'])}) "
                     f"| {c['squamous_counted']}/{c['squamous_annotated']} "
                     f"| {t['top_in_circle']}/{t['fields']} | {t['outside_mean']:.1f} | {demo} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=[], help="checkpoint (repeat; default: the bundled model)")
    ap.add_argument("--baseline", default=None, help="also score this model first ('starter': the bundled one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "real_cells")
    ap.add_argument("--json", type=Path, default=None, help="write the records here")
    ap.add_argument("--fields", type=int, default=None, help="only the first N validation fields (a quick look)")
    ap.add_argument("--demo", action="store_true", help="also run the demo slide (a few minutes on CPU)")
    ap.add_argument("--config", type=Path, default=None, help="settings YAML on top of configs/default.yaml")
    ap.add_argument("--conventional-config", type=Path, default=None,
                    help="settings YAML on top of those for the conventional-Pap CRIC fields only "
                         "(e.g. configs/conventional_pap.yaml)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not FIELDS.is_dir():
        print(f"error: {FIELDS}: real fields not found", file=sys.stderr)
        return 2
    models = ([starter_model_path() if args.baseline == "starter" else Path(args.baseline)] if args.baseline else [])
    models += args.model or ([] if models else [starter_model_path()])
    overrides = conventional = None
    try:  # a wrong settings file fails here, before any run
        if args.config:
            load_config(args.config)
            overrides = read_yaml(args.config)
        if args.conventional_config:
            load_config(args.conventional_config)
            conventional = read_yaml(args.conventional_config)
    except WsiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fields = validation_fields(args.fields)
    print(f"{len(fields)} CRIC validation fields ({SPLIT.relative_to(ROOT)}), tct_marked, settings of "
          f"configs/default.yaml" + (f" + {args.config}" if args.config else "")
          + (f" (CRIC fields: + {args.conventional_config})" if args.conventional_config else ""))
    records = []
    for i, model in enumerate(models):
        r = score_model(model, args.out / f"model{i}", fields, args.demo, overrides, conventional)
        r["label"] = model_label(str(model))  # from the path given (a run outside the project keeps its folder name)
        if args.config:
            r["config"] = portable_path(args.config)
        if args.conventional_config:
            r["conventional_config"] = portable_path(args.conventional_config)
        records.append(r)
        print(f"\n{model} ({r['seconds']:.0f} s)\n{r['cric_val']['table']}")
        print(f"squamous cells counted {r['cric_val']['squamous_counted']} / annotated {r['cric_val']['squamous_annotated']}")
    print("\n" + summary_table(records))
    write_record(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
