"""Issue 21: report thresholds for conventional Pap calibrated on *out-of-fold* training fields (2-fold cross-fitting).

``benchmarks/train_calibrated_thresholds.py`` calibrated the bundled model's thresholds on the CRIC fields it
trained on (``configs/conventional_pap.yaml``: abnormal found 244/300 on the validation fields, 0.81). A model
scores its own training fields higher than new ones, so those thresholds come out too high for new fields. The
standard cure, without touching a validation field, is cross-fitting: split the training fields in two folds,
train the bundled model's recipe on each fold, score every training field with the model that did *not* train
on it, and calibrate on those out-of-fold scores.

**Method, fixed before the first run (2026-12-06).**

1. ``split``: the 251 training-side fields of ``configs/splits/cric.csv`` (annotated fields and crop-only
   fields, so crops follow their field) are split in two folds by seeded draws (first seed from 0 whose folds
   each hold 35-65% of every class's cells). ``configs/splits/cric_fold_a.csv`` puts fold A on the ``train``
   side, ``cric_fold_b.csv`` fold B; every other field (fold of the other side, all validation fields) is on
   ``val`` and is never trained on.
2. ``data``: per fold, the bundled model's training sets restricted to the fold: the ``data/cric_train`` and
   ``data/cric_train_negatives`` patches of the fold's fields (same patches, symlinked) and 150 crop mosaics of
   the fold's ``cric_cells`` crops (half of the bundled model's 300; ``wsi data crops``); the composited TCT sets
   (no CRIC cell) are shared.
3. Training, per fold, the bundled model's two stages: ``configs/crossfit/fold_a_v3.yaml`` (run v3's recipe from
   v2: focal, 7 epochs) then ``fold_a_v3b.yaml`` (v3b-eqlv2's: EQL v2, 2 epochs, + the second TCT set).
4. ``calibrate``: each fold's model runs on the annotated fields of the other fold (``wsi-run``'s per-slide
   path, as ``train_calibrated_thresholds.py``); ``wsi evaluate --calibrate-recall 0.85``'s rule
   (:func:`~wsi_pipeline.aggregate.cell_hits.calibrated_thresholds`) on the pooled out-of-fold fields gives one
   threshold per abnormal class; these are applied to the **bundled** model (trained on both folds) on its
   validation run folders. Fold models trained on half the CRIC fields are weaker than the bundled model, so
   their scores, and the thresholds, are if anything lower than the bundled model's on new fields (more found,
   more NILM flagged).

**Rule, fixed before the first run.** The cross-fitted thresholds replace the training-field ones in
``configs/conventional_pap.yaml`` only if, on the bundled model's validation run folders: abnormal found >= the
training-field thresholds' (244/300); NILM flagged <= 0.10; high grade as high grade >= 0.60; squamous counted
>= half the annotated. They become the default (liquid-based) thresholds only if also ``tct_marked`` top-1 in a
circle >= 3/7, counted abnormal calls outside circles <= 6.8 per field and demo >= 14/17 (the training-field
thresholds failed the outside count: 30.9). The issue's targets are reported as they come out.

    python benchmarks/crossfit_thresholds.py split
    python benchmarks/crossfit_thresholds.py data
    wsi train configs/crossfit/fold_a_v3.yaml && wsi train configs/crossfit/fold_a_v3b.yaml   # one core each,
    wsi train configs/crossfit/fold_b_v3.yaml && wsi train configs/crossfit/fold_b_v3b.yaml   # side by side
    python benchmarks/crossfit_thresholds.py calibrate --runs benchmarks/results/real_cells_bundled/model0 \\
        --json benchmarks/results/crossfit_thresholds.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from wsi_pipeline.aggregate.cell_hits import calibrated_thresholds, truth_from_annotations
from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import RESULTS, write_record
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS, CRIC_SPLIT, run_field, split_fields, validation_fields
from wsi_pipeline.benchmarking.second_look import TABLE_HEAD, row, score
from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.datasets.split import read_split
from wsi_pipeline.store.detections import read_detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

log = logging.getLogger("crossfit_thresholds")

TARGET_RECALL = 0.85  # issue 21's abnormal-found target
FOLDS = ("a", "b")
CLASSES = ("NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC")
FOLD_SPLIT = {f: Path(f"configs/splits/cric_fold_{f}.csv") for f in FOLDS}
FOLD_DATA = Path("data/crossfit")
FOLD_MODEL = {f: Path(f"runs/crossfit_{f}_v3b/model.pt") for f in FOLDS}
TRAINING_FIELD_THRESHOLDS = RESULTS / "train_calibrated_thresholds.json"
ANNOTATED = "NILM,ASC-US,LSIL,ASC-H,AGC,HSIL,SCC"


def draw_folds(rows: list[dict], seed: int = 0) -> tuple[dict[str, str], int]:
    """``({field: "a" | "b"}, seed)``: the first seeded half/half draw whose folds each hold 35-65% of every class."""
    fields = sorted(r["field"] for r in rows)
    cells = {r["field"]: Counter({c: int(r[c]) for c in CLASSES}) for r in rows}
    totals = {c: sum(cells[f][c] for f in fields) for c in CLASSES}
    for s in range(seed, seed + 10_000):
        u = np.random.default_rng(s).random(len(fields))
        a = {f for f, x in zip(fields, u) if x < 0.5}
        if all(0.35 * totals[c] <= sum(cells[f][c] for f in a) <= 0.65 * totals[c] for c in CLASSES):
            return {f: ("a" if f in a else "b") for f in fields}, s
    raise SystemExit("error: no fold draw meets the per-class shares")


def cmd_split(args: argparse.Namespace) -> None:
    with open(CRIC_SPLIT, newline="") as fh:
        rows = list(csv.DictReader(fh))
    folds, seed = draw_folds([r for r in rows if r["split"] == "train"])
    for fold, path in FOLD_SPLIT.items():
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["field", "split", "source", "cells", *CLASSES])
            for r in rows:
                side = "train" if folds.get(r["field"]) == fold else "val"
                w.writerow([r["field"], side, r["source"], r["cells"], *(r[c] for c in CLASSES)])
        n = Counter(folds.values())[fold]
        cells = {c: sum(int(r[c]) for r in rows if folds.get(r["field"]) == fold) for c in CLASSES}
        print(f"{path}: fold {fold} (seed {seed}) trains on {n} fields; cells {cells}")


def restrict(src: Path, out: Path, fields: set[str]) -> int:
    """The patch set ``src`` restricted to patches of ``fields`` (images symlinked); patches kept."""
    ann = json.loads((src / "annotations.json").read_text())
    images = [i for i in ann["images"] if i["slide"] in fields]
    ids = {i["id"] for i in images}
    ann["images"] = images
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in ids]
    if "source_slides" in ann["info"]:
        ann["info"]["source_slides"] = [s for s in ann["info"]["source_slides"] if Path(s["slide"]).stem in fields]
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in images:
        link = out / "images" / i["file_name"]
        if not link.exists():
            link.symlink_to((src / ann["info"].get("images_dir", "images") / i["file_name"]).resolve())
    (out / "annotations.json").write_text(json.dumps(ann))
    return len(images)


def cmd_data(args: argparse.Namespace) -> None:
    for fold, split_path in FOLD_SPLIT.items():
        fields = set(read_split(split_path).fields("train"))
        out = FOLD_DATA / fold
        for name in ("cric_train", "cric_train_negatives"):
            print(f"{out / name}: {restrict(Path('data') / name, out / name, fields)} patches")
        if not (out / "cric_cell_mosaics" / "annotations.json").is_file():
            subprocess.run(["wsi", "data", "crops", str(Path("../shared/data/cytology/cric_cells/index.csv")),
                            "--mpp", "0.30", "--split", str(split_path), "--side", "train", "--images", "150",
                            "--annotated-classes", ANNOTATED, "--out", str(out / "cric_cell_mosaics")], check=True)


def out_of_fold_fields(taxonomy, out: Path, models: tuple[str, ...] = FOLDS) -> list:
    """(detections, truth) of every annotated training field, run with the fold model that did not train on it
    (only the fields of the fold ``models`` did not train on)."""
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    pooled = []
    for fold in FOLDS:
        other = FOLDS[1 - FOLDS.index(fold)]
        if other not in models:
            continue
        split = read_split(FOLD_SPLIT[other])  # the other fold's model never trained on this fold's fields
        mine = set(read_split(FOLD_SPLIT[fold]).fields("train"))
        images = [p for p in split_fields("train") if p.stem in mine and split.side(p) == "val"]
        for i, image in enumerate(images, 1):
            folder = out / f"model_{other}" / image.stem
            if not (folder / "detections.parquet").is_file():
                folder = run_field(image, out / f"model_{other}", FOLD_MODEL[other], mpp[image.stem])
            truth = truth_from_annotations(load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True))
            pooled.append((read_detections(folder / "detections.parquet"), truth))
        log.info("fold %s: %d fields run with the fold-%s model", fold, len(images), other)
    return pooled


def decide(training: dict, crossfit: dict) -> tuple[list[str], list[str]]:
    """The module docstring's rule: (failed conditions for the conventional-Pap profile, for the default)."""
    t, c = training["cric_val"]["hits"], crossfit["cric_val"]["hits"]
    profile = {
        "abnormal found >= training-field thresholds'": c["abnormal_found"] >= t["abnormal_found"],
        "NILM flagged <= 0.10": c["nilm_flagged"] <= 0.10 * c["nilm_total"],
        "high grade >= 0.60": c["high_grade_found"] >= 0.60 * c["high_grade_total"],
        "squamous >= half": crossfit["cric_val"]["squamous_counted"] >= crossfit["cric_val"]["squamous_annotated"] / 2,
    }
    default = {
        "tct top-1 >= 3/7": crossfit["tct_marked"]["top_in_circle"] >= 3,
        "tct outside <= 6.8": crossfit["tct_marked"]["outside_mean"] <= 6.8,
        "demo >= 14/17": crossfit.get("demo", {}).get("found", 0) >= 14,
    }
    failed_profile = [k for k, ok in profile.items() if not ok]
    return failed_profile, failed_profile + [k for k, ok in default.items() if not ok]


def cmd_calibrate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    taxonomy = load_taxonomy()
    cfg = load_config()
    default_thresholds, _ = class_thresholds(taxonomy, cfg.report)
    if args.run_only:
        out_of_fold_fields(taxonomy, args.out, (args.run_only,))
        return
    fields = out_of_fold_fields(taxonomy, args.out)
    thresholds, choices = calibrated_thresholds(fields, TARGET_RECALL, default_thresholds, taxonomy)
    chosen = {c.class_name: c.threshold for c in choices}
    for c in choices:
        print(f"  {c.class_name:7s} threshold {c.threshold:.3f}: {c.recall:.2f} of {c.cells} out-of-fold nuclei"
              + ("" if c.reachable else " (target not reachable)"))
    training_chosen = json.loads(TRAINING_FIELD_THRESHOLDS.read_text())["thresholds"]

    def scored(classes: dict[str, float]) -> dict:
        report = dataclasses.replace(cfg.report, class_score_thresholds={**cfg.report.class_score_thresholds, **classes})
        return score(None, args.runs, val, taxonomy, class_thresholds(taxonomy, report)[0], report)

    val = validation_fields()
    results = {"default": scored({}), "training_fields": scored(training_chosen), "crossfit": scored(chosen)}
    failed_profile, failed_default = decide(results["training_fields"], results["crossfit"])
    print(f"\n{len(val)} CRIC validation fields, tct_marked, demo (bundled model)\n{TABLE_HEAD}")
    print(row("default thresholds (0.5)", results["default"]))
    print(row("calibrated on training fields", results["training_fields"]))
    print(row("calibrated out of fold", results["crossfit"]))
    print(f"conventional-Pap profile: {'adopted' if not failed_profile else 'not adopted'}"
          + (f" (failed: {'; '.join(failed_profile)})" if failed_profile else ""))
    print(f"default thresholds: {'adopted' if not failed_default else 'not adopted'}"
          + (f" (failed: {'; '.join(failed_default)})" if failed_default else ""))
    write_record(args.json, {"target_recall": TARGET_RECALL, "out_of_fold_fields": len(fields), "thresholds": chosen,
                             "training_field_thresholds": training_chosen,
                             "choices": [dataclasses.asdict(c) for c in choices], **results,
                             "profile_adopted": not failed_profile, "failed_profile": failed_profile,
                             "default_adopted": not failed_default, "failed_default": failed_default,
                             "seconds": round(time.perf_counter() - started, 1)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("split", help="write the two fold split files")
    sub.add_parser("data", help="the fold training sets under data/crossfit/")
    cal = sub.add_parser("calibrate", help="out-of-fold thresholds, judged on the bundled model's validation runs")
    cal.add_argument("--runs", type=Path, required=True, help="the bundled model's real_cells.py run folders")
    cal.add_argument("--out", type=Path, default=RESULTS / "crossfit_thresholds", help="out-of-fold runs go here")
    cal.add_argument("--json", type=Path, default=None)
    cal.add_argument("--run-only", choices=FOLDS, default=None,
                     help="only run this fold's model on the other fold's fields (to run the two folds side by side)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("wsi_pipeline").setLevel(logging.ERROR)
    {"split": cmd_split, "data": cmd_data, "calibrate": cmd_calibrate}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
