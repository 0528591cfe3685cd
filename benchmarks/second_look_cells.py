"""A second look on real cells (issue 22 item 8): the loss benchmark's classifier re-scores a detector's cells.

The long-tail benchmark on real CRIC cells (``benchmarks/longtail_cells.py``) decided for ``eqlv2``: a linear
sigmoid head on frozen ImageNet EfficientNet-Lite0 features (pooled C5 of a 30 um window at 64 px), trained
on the ``cric_cells`` crops of the training fields (the ``natural`` distribution, seed 0, its fixed schedule).
Here that classifier looks again at the candidate cells a detector found, offline, from the per-field run
folders :mod:`real_cells` wrote (``--runs``; nothing is re-detected), and the real-cells targets are
scored for the detector alone and with the second look, in the same run.

**Re-scoring, fixed before the first look at a validation number.** A detection is a candidate when its
highest score among the six CRIC classes (NILM, ASC-US, LSIL, ASC-H, HSIL, SCC), ``q``, is >= 0.25 (below
that, no re-scored class can reach the report threshold 0.5). The classifier sees a 30 um window centred on
the box, read from the slide at 30/64 um/px, and gives ``p_c`` per CRIC class; each of the six class scores
becomes ``sqrt(q * p_c)`` (the geometric mean of "a squamous cell is here" and "it is of class c", the
design of the published two-stage screeners); other classes (INFL, AGC, organisms) keep the detector's
scores; the row's class is the new argmax. The report thresholds of ``configs/default.yaml`` then count
cells as before. Nothing is fitted or tuned on the validation fields, ``tct_marked`` or the demo.

**The rule, fixed before the first look.** The second look is adopted for a detector only if, measured on
that detector's run folders, all of these hold:

1. CRIC validation abnormal nuclei found as abnormal rise by >= 0.05 (absolute; 15 of the 300);
2. CRIC validation NILM nuclei flagged abnormal stay <= 0.10;
3. ASC-H/HSIL/SCC found as ASC-H/HSIL/SCC do not fall;
4. counted squamous cells stay >= half the annotated squamous nuclei;
5. ``tct_marked``: the top abnormal call in a circle in no fewer fields, and counted abnormal calls outside
   circles per field (mean) <= 6.8 (the bundling rules' bound);
6. the demo's planted high-grade cells found do not fall.

Otherwise the pipeline keeps no second-look stage, and the numbers are reported as they are.

**Classifiers.** ``cric``: the benchmark's classifier as described above. ``cric+tct`` (added after ``cric``
was measured: it raised high grade as high grade and ``tct_marked`` top-1 but lost demo cells, which are
TCT crops): the same head, loss, seed and schedule, trained on the same CRIC crops plus the *training*
split of the liquid-based ``cell_crops`` (ASC-US, LSIL, ASC-H, HSIL, SCC folders; the crop-level split of
``wsi data composite``, whose test side alone is pasted into the demo slide), each a 30 um centre window at
the crops' estimated 0.27 um/px. Same re-scoring, same rule, judged separately; ``tct_marked`` is never
trained on.

    python benchmarks/real_cells.py --model runs/starter_v3b/model.pt --demo --out benchmarks/results/real_cells_v3b
    python benchmarks/second_look_cells.py --runs benchmarks/results/real_cells_v3b/model0 \\
        --runs benchmarks/results/real_cells/model0 --json benchmarks/results/second_look_cells.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsi_pipeline.aggregate.summary import class_thresholds
from wsi_pipeline.benchmarking import CRIC_SPLIT as SPLIT, RESULTS, portable_path, write_record
from wsi_pipeline.benchmarking.cells import (CLASSES, CROP_PX, LOSS_SPECS, PRIOR, SCHEDULE, Lite0, Standardise, batch_plan,
                                             dihedral, extract, fit, load_crop_cells, new_head, resized)
from wsi_pipeline.benchmarking.images import read_rgb
from wsi_pipeline.benchmarking.real_fields import DATA, validation_fields
from wsi_pipeline.benchmarking.second_look import RULE, TABLE_HEAD, Rescore, decide, row, score
from wsi_pipeline.config import load_config
from wsi_pipeline.datasets.composite import split_files
from wsi_pipeline.io import open_slide
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.store.detections import Detections
from wsi_pipeline.taxonomy import load_taxonomy

log = logging.getLogger("second_look_cells")

LOSS = "eqlv2"  # the benchmark's verdict (benchmarks/results/longtail_cells.json)
SEED = 0
VIEWS = 4  # the benchmark's cached training views
WINDOW_UM = 30.0  # the cric_cells crops span 30 um, resampled to CROP_PX (64) px
MIN_SQUAMOUS_SCORE = 0.25
TCT_CROPS = DATA / "cell_crops"
TCT_CROPS_MPP = 0.27  # configs/starter_data.yaml crops_mpp
TCT_TEST_FRACTION = 0.2  # configs/starter_data.yaml test_fraction: the demo slide pastes only that side
TCT_CROP_CLASSES = {"1": "ASC-US", "2": "ASC-H", "3": "LSIL", "4": "HSIL", "5": "SCC"}
CLASSIFIERS = ("cric", "cric+tct")
CACHE = RESULTS / "cache" / "longtail_cells" / "all"


# ------------------------------------------------------------------ the classifier


@dataclass
class CellClassifier:
    """The frozen Lite0 features and the linear head: sigmoid probabilities of :data:`CLASSES` per window."""

    net: Lite0
    head: nn.Module

    @torch.inference_mode()
    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 6)`` for uint8 ``(n, 64, 64, 3)`` windows."""
        if not len(windows):
            return np.zeros((0, len(CLASSES)), np.float32)
        feats = torch.cat([self.net.upper(self.net.lower(windows[i : i + 128])) for i in range(0, len(windows), 128)])
        self.head.eval()
        return torch.sigmoid(self.head(feats)).numpy()


def tct_crop_windows(crops_dir: Path = TCT_CROPS, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(n, 64, 64, 3)`` 30 um centre windows of the liquid-based crops of ``split`` and their class indices."""
    images, labels = [], []
    side = round(WINDOW_UM / TCT_CROPS_MPP)
    for folder, name in TCT_CROP_CLASSES.items():
        for path in split_files(crops_dir / folder, split, TCT_TEST_FRACTION):
            image = read_rgb(path)
            h, w = image.shape[:2]
            y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
            images.append(image[y0 : y0 + side, x0 : x0 + side])
            labels.append(CLASSES.index(name))
    return resized(images, CROP_PX), np.array(labels, np.int64)


@torch.inference_mode()
def view_features(net: Lite0, windows: np.ndarray, views: int = VIEWS) -> np.ndarray:
    """``(n, views, 320)`` pooled C5 of each window's flips/turns (the benchmark's cached views)."""
    return np.stack([torch.cat([net.upper(net.lower(dihedral(windows[i : i + 128], v))) for i in range(0, len(windows), 128)]).numpy()
                     for v in range(views)], axis=1)


def train_classifier(variant: str = "cric", cache: Path = CACHE, loss: str = LOSS, seed: int = SEED) -> CellClassifier:
    """The benchmark's ``natural`` run of ``loss`` at ``seed`` (the training fields' crops, its schedule); for
    ``cric+tct`` with the liquid-based crops' training split added."""
    net = Lite0()
    crops = load_crop_cells()
    train = crops.index("train")
    pooled = extract(net, crops, train, VIEWS, cache / f"features/crops_train_v{VIEWS}_{CROP_PX}px", False)["pooled"]
    labels = crops.labels[train]
    if variant == "cric+tct":
        windows, tct_labels = tct_crop_windows()
        pooled = np.concatenate([pooled, view_features(net, windows)])
        labels = np.concatenate([labels, tct_labels])
    feats = torch.from_numpy(pooled)
    flat = feats.reshape(-1, feats.shape[-1])
    spec = LOSS_SPECS[loss]
    head = nn.Sequential(Standardise(flat.mean(0), flat.std(0).clamp(min=1e-6)), new_head(feats.shape[-1], seed, spec.get("prior", PRIOR)))
    criterion = build_loss(spec["loss"], len(CLASSES), spec.get("params"))
    plan = batch_plan(labels, SCHEDULE["epochs"], SCHEDULE["batch_size"], VIEWS, seed, spec.get("repeat_factor"))
    torch.manual_seed(seed)
    fit(head, criterion, feats, labels, plan, SCHEDULE)
    log.info("classifier %s: %s seed %d on %d training crops", variant, loss, seed, len(labels))
    return CellClassifier(net, head)


# ------------------------------------------------------------------ re-scoring


def windows_at(slide_path: Path, mpp: float | None, centres: np.ndarray) -> np.ndarray:
    """30 um windows centred on level-0 ``centres``, at 30/64 um/px."""
    out = np.empty((len(centres), CROP_PX, CROP_PX, 3), np.uint8)
    with open_slide(slide_path, mpp=mpp) as slide:
        half = WINDOW_UM / 2 / slide.mpp[0]
        for i, (x, y) in enumerate(centres):
            out[i] = slide.read_at_mpp(round(x - half), round(y - half), CROP_PX, WINDOW_UM / CROP_PX)
    return out


def rescored(det: Detections, slide_path: Path, mpp: float | None, classifier: CellClassifier, names: list[str]) -> Detections:
    """``det`` with the six CRIC class scores of each candidate replaced by ``sqrt(q * p_c)`` (module docstring)."""
    cric = np.array([names.index(c) for c in CLASSES])
    scores = det.class_scores.astype(np.float32).copy()
    q = scores[:, cric].max(1) if len(scores) else np.zeros(0, np.float32)
    rows = np.flatnonzero(q >= MIN_SQUAMOUS_SCORE)
    if len(rows):
        b = det.boxes[rows]
        centres = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
        p = classifier.probabilities(windows_at(slide_path, mpp, centres))
        scores[np.ix_(rows, cric)] = np.sqrt(q[rows, None] * p)
    labels = scores.argmax(1).astype(det.labels.dtype) if len(scores) else det.labels
    best = scores.max(1) if len(scores) else det.scores
    return Detections(det.boxes, best.astype(np.float32), labels, det.patch_index, scores, [names[i] for i in labels])


def second_look(classifier: CellClassifier, names: list[str]) -> Rescore:
    """The re-scoring of :func:`rescored` as :func:`wsi_pipeline.benchmarking.second_look.score` calls it."""
    return lambda det, run, slide_path, mpp: rescored(det, slide_path, mpp, classifier, names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, action="append", required=True,
                    help="a model's folder of real_cells.py run folders (cric_val/, tct/, demo/); repeat for several detectors")
    ap.add_argument("--classifier", action="append", choices=CLASSIFIERS, default=None,
                    help="second-look classifier(s) to measure (repeat; default: both)")
    ap.add_argument("--fields", type=int, default=None, help="only the first N validation fields (a quick look)")
    ap.add_argument("--json", type=Path, default=None, help="write the records here")
    args = ap.parse_args(argv)
    args.classifier = args.classifier or list(CLASSIFIERS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    taxonomy = load_taxonomy()
    cfg = load_config()
    thresholds, _ = class_thresholds(taxonomy, cfg.report)
    fields = validation_fields(args.fields)
    classifiers = {name: train_classifier(name) for name in args.classifier}
    records = []
    for runs in args.runs:
        alone = score(None, runs, fields, taxonomy, thresholds, cfg.report)
        print(f"\n{runs}: {len(fields)} CRIC validation fields ({SPLIT.name}), tct_marked, demo")
        print(TABLE_HEAD)
        print(row("detector", alone))
        record = {"runs": portable_path(runs),
                  "detector": alone, "second_look": {}}
        for name, classifier in classifiers.items():
            second = score(second_look(classifier, taxonomy.names), runs, fields, taxonomy, thresholds, cfg.report)
            adopted, failed = decide(alone, second)
            record["second_look"][name] = {**second, "adopted": adopted, "failed": failed}
            print(row(f"+ second look ({name})", second))
            print(f"  adopted: {'yes' if adopted else 'no'}" + (f" (failed: {'; '.join(failed)})" if failed else ""))
        records.append(record)
    result = {"rule": RULE, "classifiers": args.classifier, "loss": LOSS, "seed": SEED, "window_um": WINDOW_UM, "min_squamous_score": MIN_SQUAMOUS_SCORE,
              "records": records, "seconds": round(time.perf_counter() - started, 1)}
    write_record(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
