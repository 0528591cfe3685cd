"""Fine-tuning the starter model on a lab's own annotated fields, validated leave-fields-out on CRIC.

The road a lab takes (docs/training.md, "Fine-tuning"): ``wsi data build`` on its annotated fields,
``wsi train configs/finetune.yaml`` from the bundled starter model, ``wsi-run --model``. Here the
"lab" is the 8 CRIC conventional Pap fields, split into 4 folds by position in sorted order
(field i is in fold i mod 4; fixed before any result). For every fold the model is fine-tuned on the
other 6 fields and scored by the whole pipeline, at the report thresholds, on the 2 fields it never
saw: nucleus hits, and the slide call on a mosaic of the 2 held-out fields. Pooled over folds every
field is scored exactly once, by a model that did not train on it. The fold models are also run on
``tct_marked`` (TCT, never trained on by anything here). Nothing tunes a threshold.

    nice python benchmarks/cric_finetune.py                      # ~25 min on 2 CPU cores
    python benchmarks/cric_finetune.py --folds 0 --epochs 5      # one quick fold
    wsi data composite configs/starter_data.yaml --out data/mix --split train --images 160 --seed 5
    python benchmarks/cric_finetune.py --mix data/mix/train --epochs 12 --out benchmarks/results/cric_finetune_mix
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
from wsi_pipeline.benchmarking import PROJECT as ROOT, write_record
from wsi_pipeline.benchmarking import RESULTS
from wsi_pipeline.benchmarking.real_fields import CRIC_MPP, cric, cric_fields, cric_mosaic, tct_marked
from wsi_pipeline.config import load_config, load_train_config
from wsi_pipeline.datasets.slides import extract_dataset
from wsi_pipeline.aggregate.cell_hits import NucleusHitResult
from wsi_pipeline.models.training import check_registry_names, train
from wsi_pipeline.taxonomy import load_taxonomy

N_FOLDS = 4
CRIC_CLASSES = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]  # what CRIC Cervix labels (no AGC, INFL, organisms)


def fold_fields(fold: int) -> tuple[list[Path], list[Path]]:
    """(training fields, held-out fields) of ``fold``."""
    fields = cric_fields()
    held = [f for i, f in enumerate(fields) if i % N_FOLDS == fold]
    return [f for f in fields if f not in held], held


def run_fold(fold: int, args, taxonomy, thresholds) -> dict:
    out = args.out / f"fold{fold}"
    result_file = out / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    train_fields, held = fold_fields(fold)
    data = out / "data"
    if not (data / "annotations.json").is_file():
        # every patch of every training field (background_ratio high): the fields are small
        extract_dataset([(f, f.with_suffix(".geojson")) for f in train_fields], data, target_mpp=0.5, patch_size=256,
                        background_ratio=20.0, slide_mpp=CRIC_MPP, progress=False,
                        annotated_classes=CRIC_CLASSES if args.partial else None)
    train_data = [str(data)] * args.field_repeats + [str(args.mix)] if args.mix else str(data)
    over = {"train_data": train_data, "out": str(out / "train"), "num_threads": args.threads,
            "schedule": {"epochs": args.epochs, "lr": args.lr}}
    cfg = load_train_config(ROOT / "configs" / "finetune.yaml", over)
    check_registry_names(cfg)
    started = time.perf_counter()
    model = out / "train" / "model.pt"
    if not model.is_file():
        train(cfg, resume=(out / "train" / "last.pt").is_file(), progress=not args.no_progress)
    seconds = time.perf_counter() - started
    hits = cric(model, out / "runs", taxonomy, thresholds, fields=held)
    mosaic = cric_mosaic(model, out / "mosaic", fields=held)
    tct = tct_marked(model, out / "runs", taxonomy, thresholds)
    record = {"fold": fold, "train_fields": [f.stem[:8] for f in train_fields], "held_out": [f.stem[:8] for f in held],
              "train_seconds": seconds, "cric": hits["pooled"].to_dict(), "cric_per_field": hits["per_field"],
              "mosaic": mosaic, "tct_top_in_circle": sum(bool(v["top_in_circle"]) for v in tct.values()),
              "tct_outside": [v["counted_abnormal_outside"] for v in tct.values()]}
    result_file.write_text(json.dumps(record, indent=2, default=str))
    logging.warning("fold %d: CRIC abnormal %d/%d, NILM flagged %d/%d, mosaic %s (truth %s), tct top-1 %d/7 (%.0f s)",
                    fold, hits["pooled"].abnormal_found, hits["pooled"].abnormal_total, hits["pooled"].nilm_flagged,
                    hits["pooled"].nilm_total, mosaic["category"], mosaic["truth"], record["tct_top_in_circle"], seconds)
    return record


def pooled_hits(records: list[dict]) -> NucleusHitResult:
    total = NucleusHitResult()
    for r in records:
        c = r["cric"]
        total = total.add(NucleusHitResult(abnormal_total=c["abnormal_total"], abnormal_found=c["abnormal_found"],
                                           nilm_total=c["nilm_total"], nilm_flagged=c["nilm_flagged"]))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS / "cric_finetune")
    ap.add_argument("--folds", default=",".join(str(i) for i in range(N_FOLDS)))
    ap.add_argument("--epochs", type=int, default=None, help="override schedule.epochs of configs/finetune.yaml")
    ap.add_argument("--lr", type=float, default=None, help="override schedule.lr of configs/finetune.yaml")
    ap.add_argument("--mix", type=Path, default=None,
                    help="a second training set trained on together with each fold's fields (e.g. a composited set "
                         "from `wsi data composite configs/starter_data.yaml --split train`), so the model keeps its TCT domain")
    ap.add_argument("--field-repeats", type=int, default=1,
                    help="with --mix: the fold's fields count this many times per epoch (balances the two sets)")
    ap.add_argument("--partial", action="store_true",
                    help="the fields' annotations cover only CRIC's classes (NILM, ASC-US, LSIL, ASC-H, HSIL, SCC): "
                         "the others are not trained as background on them (docs/training.md)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    schedule = load_train_config(ROOT / "configs" / "finetune.yaml").schedule
    args.epochs = args.epochs or schedule.epochs
    args.lr = args.lr or schedule.lr
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, load_config().report)
    records = [run_fold(int(f), args, taxonomy, thresholds) for f in args.folds.split(",")]
    total = pooled_hits(records)
    tct_top = [r["tct_top_in_circle"] for r in records]
    print(f"\nLeave-fields-out fine-tuning from the starter model ({len(records)} folds, configs/finetune.yaml, "
          f"{args.epochs} epochs, lr {args.lr:g}{f', mixed with {args.mix} (fields x{args.field_repeats})' if args.mix else ''}"
          f"{', CRIC classes only' if args.partial else ''}; "
          "report thresholds, nothing tuned)")
    print("| fold | held-out fields | abnormal found | NILM flagged | held-out mosaic call (truth) | tct_marked top-1 in circle | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        c = r["cric"]
        print(f"| {r['fold']} | {', '.join(r['held_out'])} | {c['abnormal_found']}/{c['abnormal_total']} | "
              f"{c['nilm_flagged']}/{c['nilm_total']} | {r['mosaic']['category']} ({r['mosaic']['truth']}) | "
              f"{r['tct_top_in_circle']}/7 | {r['train_seconds']:.0f} |")
    recall = "n/a" if total.abnormal_recall is None else f"{total.abnormal_recall:.2f}"
    flagged = "n/a" if total.nilm_flagged_fraction is None else f"{total.nilm_flagged_fraction:.2f}"
    calls = sum(r["mosaic"]["category"] not in ("NILM", "unsatisfactory") for r in records)
    print(f"\npooled: abnormal recall {total.abnormal_found}/{total.abnormal_total} = {recall}; NILM flagged "
          f"{total.nilm_flagged}/{total.nilm_total} = {flagged}; held-out mosaics called abnormal {calls}/{len(records)}; "
          f"tct_marked top-1 in circle per fold model {tct_top} (median {np.median(tct_top):.0f}/7)")
    write_record(args.json, {"folds": records, "pooled": total.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
