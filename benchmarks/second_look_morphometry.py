"""Nuclear morphometry as a second look (issue 21 item 6): does the nucleus a detection sits on change its call?

The report measures every counted cell's nucleus (``wsi_pipeline/aggregate/morphometry.py``: area in um^2,
its ratio to the slide's median NILM nucleus, N/C) as evidence for the reader. The issue allows it as a
second-look feature only if it helps on validation by a rule written before the first look; this is that
check, offline on the run folders ``benchmarks/real_cells.py`` wrote (nothing is re-detected).

**The morphometry model (training fields only).** Every annotated nucleus of the ``cric_fields`` images on the
training side of ``configs/splits/cric.csv`` (NILM and the five squamous abnormal classes) is measured with the
report's own method at its annotated point (72 um window, the field's ``mpp_estimate``); its area is divided
by the median area of the same field's annotated NILM nuclei (the median over all training NILM nuclei when a
field has fewer than 3). A logistic regression on ``log(area ratio)`` and ``log(N/C)`` (abnormal vs NILM;
L-BFGS, L2 1e-4) gives ``p_m``; ``pi`` is the abnormal share of that fit set. Nothing is fitted on the
validation fields, ``tct_marked`` or the demo.

**Re-scoring, fixed before the first look.** A detection is a candidate when its highest score among the five
squamous abnormal classes, ``a``, is >= 0.1 (below that, even a likelihood ratio of 9 cannot lift it to the
report threshold 0.5). Its nucleus is measured as the report does (72 um window at the box centre, the
slide's pixel size) and divided by the median NILM nucleus the report measured for that slide
(``report.json`` ``morphometry.nilm_median_area_um2``; a slide without one is left as it is). With a nucleus
found, the morphometry enters as a likelihood ratio (naive Bayes: detector and nucleus evidence taken as
independent): ``a' = sigmoid(logit(a) + logit(p_m) - logit(pi))``, and the five abnormal class scores are
multiplied by ``a' / a`` (clipped to [0, 1]); NILM, AGC, INFL and organism scores are kept; the row's class is
the new argmax. No nucleus found: the row is left as it is. The report thresholds of ``configs/default.yaml``
then count cells as before.

**The rule** is the classifier second look's (:data:`wsi_pipeline.benchmarking.second_look.RULE`), fixed before
either looked: abnormal found +0.05, NILM flagged <= 0.10, high grade not lower, squamous >= half, ``tct_marked``
top-1 not lower and outside <= 6.8, demo not lower. Otherwise the pipeline keeps no second-look stage.

    python benchmarks/real_cells.py --model wsi_pipeline/models/starter/starter_fcos_lite0.pt --demo \\
        --out benchmarks/results/real_cells_bundled          # the bundled model's run folders (328 s)
    python benchmarks/second_look_morphometry.py --runs benchmarks/results/real_cells_bundled/model0 \\
        --json benchmarks/results/second_look_morphometry.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.aggregate.morphometry import CROP_UM, measure_nucleus
from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import CRIC_SPLIT, RESULTS, portable_path, write_record
from wsi_pipeline.benchmarking.cells import CLASSES
from wsi_pipeline.benchmarking.real_fields import CRIC_FIELDS, split_fields, validation_fields
from wsi_pipeline.benchmarking.second_look import RULE, TABLE_HEAD, Rescore, decide, row, score
from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.annotations import load_annotations
from wsi_pipeline.datasets.slides import read_mpp_table
from wsi_pipeline.io import open_slide
from wsi_pipeline.store.detections import Detections
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.taxonomy import load_taxonomy

log = logging.getLogger("second_look_morphometry")

ABNORMAL = CLASSES[1:]  # the five squamous abnormal classes CRIC annotates
MIN_ABNORMAL_SCORE = 0.1
MIN_FIELD_NILM = 3
L2 = 1e-4
CACHE = RESULTS / "cache" / "second_look_morphometry"


@dataclass(frozen=True)
class MorphometryModel:
    """``p_m = sigmoid(bias + w_area * log(area ratio) + w_nc * log(N/C))`` and the fit set's abnormal share."""

    bias: float
    w_area: float
    w_nc: float
    prior: float
    nuclei: int
    abnormal: int

    def log_likelihood_ratio(self, ratio: np.ndarray, nc: np.ndarray) -> np.ndarray:
        """``logit(p_m) - logit(prior)`` per nucleus.

        Example:
            >>> m = MorphometryModel(0.0, 2.0, 0.0, 0.5, 2, 1)
            >>> m.log_likelihood_ratio(np.array([1.0, math.e]), np.array([0.1, 0.1])).round(3).tolist()
            [0.0, 2.0]
        """
        logit = self.bias + self.w_area * np.log(ratio) + self.w_nc * np.log(nc)
        return logit - math.log(self.prior / (1 - self.prior))


def measure_points(image: Path, mpp: float, points: list[tuple[float, float]]) -> np.ndarray:
    """``(n, 2)`` nucleus area (um^2) and N/C at level-0 ``points`` of ``image`` (NaN where none was found)."""
    out = np.full((len(points), 2), np.nan)
    with open_slide(image, mpp=mpp) as slide:
        px_mpp = float(slide.mpp[0])
        size = max(8, round(CROP_UM / px_mpp))
        for i, (x, y) in enumerate(points):
            x0, y0 = round(x - size / 2), round(y - size / 2)
            m = measure_nucleus(slide.read_region(0, x0, y0, size, size), px_mpp, (x - x0, y - y0))
            if m.found:
                out[i] = m.area_um2, m.nc_ratio
    return out


def training_nuclei(taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, 2)`` (log area ratio to the field's NILM median, log N/C) and labels (1 abnormal) of the
    annotated nuclei of the training fields (cached)."""
    cache = CACHE / "training_nuclei.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["features"], saved["labels"]
    aliases = load_synth_config(None, taxonomy).label_aliases
    mpp = read_mpp_table(CRIC_FIELDS / "fields.csv")
    per_field = []
    images = split_fields("train")
    for i, image in enumerate(images, 1):
        cells = [c for c in load_annotations(CRIC_FIELDS / "cells.csv", taxonomy, aliases, image=image, strict=True)
                 if c.class_name in CLASSES]
        points = [((c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2) for c in cells]
        measured = measure_points(image, mpp[image.stem], points)
        per_field.append((measured, np.array([c.class_name != "NILM" for c in cells])))
        if i % 20 == 0 or i == len(images):
            log.info("measured nuclei of %d/%d training fields", i, len(images))
    nilm_all = np.concatenate([m[~a, 0] for m, a in per_field])
    overall = float(np.nanmedian(nilm_all))
    features, labels = [], []
    for measured, abnormal in per_field:
        nilm = measured[~abnormal, 0]
        nilm = nilm[np.isfinite(nilm)]
        median = float(np.median(nilm)) if len(nilm) >= MIN_FIELD_NILM else overall
        found = np.isfinite(measured[:, 0])
        features.append(np.stack([np.log(measured[found, 0] / median), np.log(measured[found, 1])], 1))
        labels.append(abnormal[found].astype(np.int64))
    features_arr, labels_arr = np.concatenate(features), np.concatenate(labels)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features_arr, labels=labels_arr)
    return features_arr, labels_arr


def fit_model(features: np.ndarray, labels: np.ndarray) -> MorphometryModel:
    """The logistic regression of the module docstring."""
    x, y = torch.from_numpy(features).double(), torch.from_numpy(labels).double()
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(w[0] + x @ w[1:], y) + L2 * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    b, wa, wn = (float(v) for v in w.detach())
    return MorphometryModel(b, wa, wn, float(labels.mean()), len(labels), int(labels.sum()))


def second_look(model: MorphometryModel, names: list[str]) -> Rescore:
    """The re-scoring of the module docstring, as :func:`wsi_pipeline.benchmarking.second_look.score` calls it."""
    abnormal = np.array([names.index(c) for c in ABNORMAL])

    def rescore(det: Detections, run: Path, slide_path: Path, mpp: float | None) -> Detections:
        median = json.loads((run / "report.json").read_text()).get("morphometry", {}).get("nilm_median_area_um2")
        scores = det.class_scores.astype(np.float32).copy()
        a = scores[:, abnormal].max(1) if len(scores) else np.zeros(0, np.float32)
        rows = np.flatnonzero(a >= MIN_ABNORMAL_SCORE)
        if median is None or not len(rows):
            return det
        centres = (det.boxes[rows, :2] + det.boxes[rows, 2:]) / 2
        measured = measure_points(slide_path, mpp, [tuple(c) for c in centres])
        found = np.isfinite(measured[:, 0])
        rows, measured = rows[found], measured[found]
        llr = model.log_likelihood_ratio(measured[:, 0] / median, measured[:, 1])
        a_rows = a[rows].astype(np.float64).clip(1e-6, 1 - 1e-6)
        new = 1 / (1 + np.exp(-(np.log(a_rows / (1 - a_rows)) + llr)))
        scores[np.ix_(rows, abnormal)] = np.clip(scores[np.ix_(rows, abnormal)] * (new / a_rows)[:, None], 0, 1)
        labels = scores.argmax(1).astype(det.labels.dtype)
        return Detections(det.boxes, scores.max(1).astype(np.float32), labels, det.patch_index, scores,
                          [names[i] for i in labels])

    return rescore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, action="append", required=True,
                    help="a model's folder of real_cells.py run folders (cric_val/, tct/, demo/); repeat for several detectors")
    ap.add_argument("--fields", type=int, default=None, help="only the first N validation fields (a quick look)")
    ap.add_argument("--json", type=Path, default=None, help="write the records here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not CRIC_FIELDS.is_dir():
        print(f"error: {CRIC_FIELDS}: real fields not found", file=sys.stderr)
        return 2
    started = time.perf_counter()
    taxonomy = load_taxonomy()
    cfg = load_config()
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    model = fit_model(*training_nuclei(taxonomy))
    log.info("morphometry model: %s", model)
    fields = validation_fields(args.fields)
    records = []
    for runs in args.runs:
        alone = score(None, runs, fields, taxonomy, thresholds, cfg.report)
        second = score(second_look(model, taxonomy.names), runs, fields, taxonomy, thresholds, cfg.report)
        adopted, failed = decide(alone, second)
        print(f"\n{runs}: {len(fields)} CRIC validation fields ({CRIC_SPLIT.name}), tct_marked, demo")
        print(TABLE_HEAD)
        print(row("detector", alone))
        print(row("+ morphometry second look", second))
        print(f"  adopted: {'yes' if adopted else 'no'}" + (f" (failed: {'; '.join(failed)})" if failed else ""))
        records.append({"runs": portable_path(runs), "detector": alone,
                        "second_look": {**second, "adopted": adopted, "failed": failed}})
    write_record(args.json, {"rule": RULE, "model": asdict(model), "min_abnormal_score": MIN_ABNORMAL_SCORE,
                             "records": records, "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
