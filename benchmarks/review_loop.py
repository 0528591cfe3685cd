"""The review loop measured (issue 25 item 5): does reviewing flagged cells make the model better?

A lab runs its model, a cytologist reviews each slide's flagged cells in ``review.html``, the decisions feed
``wsi data build``, the lab fine-tunes, and the next slides are screened (and reviewed) with the new model.
Here the reviewer is simulated from the CRIC annotations (:func:`wsi_pipeline.datasets.review.simulate_review`:
a flagged cell within 10 um of an annotated nucleus takes that nucleus's class, confirmed or corrected; one
farther than 20 um from every annotated nucleus is rejected as ``not_annotated``; in between stays pending),
on the *training* side of ``configs/splits/cric.csv``, and the loop is scored on the validation side, which
nothing here trains on. For the steps N1 < N2 < ... (``--steps``), round k:

1. ``wsi-run`` on training fields N(k-1)+1 .. Nk (a fixed order: the training fields shuffled with
   :data:`ORDER_SEED`) with the model of round k-1 (round 1: ``--base``; default starter v2, the model bundled
   before v3, which never saw a CRIC field: v3 trained on these training fields), each at its ``mpp_estimate``:
   ``review.geojson``; ``--reviewer base`` has every field run with the base model instead (the first record,
   ``review_loop_v2.json``);
2. the simulated reviewer decides each field's flagged cells;
3. all Nk reviewed fields so far become one patch set with ``wsi data build --folder`` (confirmed and corrected
   cells as boxes, rejected calls as hard negatives), exactly as a lab would build it;
4. the base model is fine-tuned on it with ``configs/finetune.yaml`` (the documented lab recipe) for
   ``--epochs`` passes over the set, at least ``--iterations`` iterations (``--epochs 0``: ``--iterations``
   whatever N, the first record's setting);
5. ``benchmarks/real_cells.py`` scores the base model (N = 0) and each round's model in one run.

Everything is resumable: finished runs, sets and models are kept under ``--out``.

    python benchmarks/review_loop.py --steps 20,60,134 --out runs/review_loop_v3 \\
        --json benchmarks/results/review_loop_v3.json
    python benchmarks/review_loop.py --steps 2 --fields 3 --iterations 4 --epochs 0 --out /tmp/loop --no-score  # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.benchmarking import PROJECT, portable_path, write_record
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS, run_field, split_fields
from wsi_pipeline.cli.main import main as wsi
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.datasets.review import simulate_review_file
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.store import review as decisions
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

log = logging.getLogger("review_loop")

ORDER_SEED = 0
ITERATIONS = 300  # fine-tuning iterations per round at least, batch 8
EPOCHS = 4  # passes over a round's reviewed set (more reviewed fields, more iterations)
BATCH = 8
PATCH_PX, TARGET_MPP = 256, 0.5  # the bundled model's training patches
FINETUNE_CONFIG = PROJECT / "configs" / "finetune.yaml"
BASE = PROJECT / "benchmarks" / "results" / "models" / "starter_v2.pt"


def training_fields(limit: int | None = None) -> list[Path]:
    """The ``cric_fields`` images on the training side of the committed split, in the loop's fixed order."""
    fields = split_fields("train")
    order = np.random.default_rng(ORDER_SEED).permutation(len(fields))
    return [fields[i] for i in order][:limit]


def reviewed_runs(fields: list[Path], out: Path, model: Path) -> list[Path]:
    """Each field run with ``model`` and its flagged cells decided by the simulated reviewer (kept)."""
    taxonomy = load_taxonomy()
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    runs = []
    for i, image in enumerate(fields, 1):
        run = out / image.stem
        review = run / "review.geojson"
        if not (review.is_file() and "simulated" in json.loads(review.read_text())):
            run = run_field(image, out, model, mpp[image.stem])
            truth = load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True)
            simulate_review_file(review, truth, mpp[image.stem])
        runs.append(run)
        if i % 10 == 0 or i == len(fields):
            log.info("reviewed fields: %d/%d", i, len(fields))
    return runs


def review_counts(runs: list[Path]) -> dict[str, int]:
    """Cells per review state over ``runs``."""
    counts: dict[str, int] = {}
    for run in runs:
        for f in decisions.read_review(run / "review.geojson")["features"]:
            state = f["properties"]["review"]
            counts[state] = counts.get(state, 0) + 1
    return counts


def build_set(runs: list[Path], out: Path) -> Path:
    """``wsi data build --folder`` over ``runs`` (linked into one folder, as a lab's batch output would be)."""
    data = out / "data"
    if (data / "annotations.json").is_file():
        return data
    folder = out / "reviewed"
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        link = folder / run.name
        if not link.exists():
            link.symlink_to(run.resolve(), target_is_directory=True)
    code = wsi(["data", "build", "--folder", str(folder), "--mpp-table", str(CRIC_FIELDS / "fields.csv"),
                "--patch-size", str(PATCH_PX), "--target-mpp", str(TARGET_MPP), "--out", str(data), "--no-progress"])
    if code:
        raise SystemExit(f"error: wsi data build --folder {folder} failed ({code})")
    return data


def finetune(data: Path, out: Path, base: Path, iterations: int, epochs: int) -> Path:
    """``base`` fine-tuned on ``data`` (``configs/finetune.yaml``) for ``epochs`` passes, at least about
    ``iterations`` steps."""
    model = out / "model" / "model.pt"
    if model.is_file():
        return model
    patches = len(json.loads((data / "annotations.json").read_text())["images"])
    epochs = max(epochs, math.ceil(iterations / max(1, math.ceil(patches / BATCH))), 1)
    code = wsi(["train", str(FINETUNE_CONFIG), "--data", str(data), "--out", str(model.parent), "--epochs", str(epochs),
                "--init-weights", str(base), "--no-progress", "-q"])
    if code or not model.is_file():
        raise SystemExit(f"error: fine-tuning on {data} failed ({code})")
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="20,60,134", help="numbers of reviewed training fields, comma-separated")
    ap.add_argument("--fields", type=int, default=None, help="only the first N training fields (a smoke run)")
    ap.add_argument("--iterations", type=int, default=ITERATIONS, help="fine-tuning iterations per round, at least")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="fine-tuning passes over a round's reviewed set")
    ap.add_argument("--reviewer", choices=("loop", "base"), default="loop",
                    help="which model screens a round's new fields: the previous round's (loop) or the base model")
    ap.add_argument("--base", type=Path, default=BASE, help="the lab's model before any review (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=PROJECT / "runs" / "review_loop")
    ap.add_argument("--json", type=Path, default=None, help="write the curve here")
    ap.add_argument("--no-score", action="store_true", help="build and fine-tune only (no validation scoring)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not CRIC_FIELDS.is_dir():
        print(f"error: {CRIC_FIELDS}: real fields not found", file=sys.stderr)
        return 2
    started = time.perf_counter()
    steps = sorted({int(s) for s in args.steps.split(",")})
    fields = training_fields(args.fields)
    steps = [min(n, len(fields)) for n in steps]
    runs: list[Path] = []
    curve, models = [], []
    for n in steps:
        reviewer = models[-1] if models and args.reviewer == "loop" else args.base
        new = reviewed_runs(fields[len(runs):n], args.out / "runs", reviewer)
        runs += new
        step_dir = args.out / f"fields{n}"
        data = build_set(runs[:n], step_dir)
        model = finetune(data, step_dir, args.base, args.iterations, args.epochs)
        models.append(model)
        patches = json.loads((data / "annotations.json").read_text())
        boxes: dict[str, int] = {}
        names = {c["id"]: c["name"] for c in patches["categories"]}
        for a in patches["annotations"]:
            boxes[names[a["category_id"]]] = boxes.get(names[a["category_id"]], 0) + 1
        curve.append({"fields": n, "reviewed_by": portable_path(reviewer), "review": review_counts(runs[:n]),
                      "new_fields_review": review_counts(new),
                      "patches": len(patches["images"]),
                      "boxes": boxes, "model": portable_path(model)})
        log.info("%d reviewed fields: %d patches, boxes %s", n, len(patches["images"]), boxes)
    result: dict = {"base": portable_path(args.base),
                    "order_seed": ORDER_SEED, "reviewer": args.reviewer, "iterations": args.iterations,
                    "epochs": args.epochs, "steps": curve}
    if not args.no_score:
        scores = args.out / "real_cells.json"
        cmd = [sys.executable, str(PROJECT / "benchmarks" / "real_cells.py"), "--baseline", str(args.base),
               "--out", str(args.out / "scores"), "--json", str(scores)]
        for model in models:
            cmd += ["--model", str(model)]
        subprocess.run(cmd, check=True)
        records = json.loads(scores.read_text())
        result["baseline"] = records[0]
        for step, record in zip(curve, records[1:]):
            step["scores"] = record
        print("| reviewed fields | abnormal found | NILM flagged | high grade as high grade | squamous counted |")
        print("|---|---|---|---|---|")
        for n, r in [(0, records[0])] + [(s["fields"], s["scores"]) for s in curve]:
            h = r["cric_val"]["hits"]
            print(f"| {n} | {h['abnormal_found']}/{h['abnormal_total']} | {h['nilm_flagged']}/{h['nilm_total']} "
                  f"| {h['high_grade_found']}/{h['high_grade_total']} | {r['cric_val']['squamous_counted']} |")
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_record(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
