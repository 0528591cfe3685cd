"""Does a second-look crop classifier earn its place? Detector alone against detector + second look.

The real-cells issue asks for a second look (a crop classifier re-scoring the top-N detections per
slide, the design of Cheng 2021, AIATBS and Smart-CCS), kept only if the validation numbers say it
earns its place. This script builds one and scores both set-ups in the same run; the measured answer
(no: see docs/model_card.md) is why the pipeline has no second-look stage.

The classifier:

* **training samples are the detector's own proposals** on the composited training set: per image its
  ``--proposals-per-image`` most suspicious boxes, labelled with the class of a truth box that holds the
  box centre with IoU >= 0.3, else background (an all-zero target); plus one window per truth box;
* **windows** of ``--window-px`` at the detector's pixel size, centred on the box, cut from the patch the
  detection came from and mirrored at its border (same rule in training and at run time); flips, 90
  degree turns, +-15% scale, stain, blur, JPEG and +-6 px centre jitter;
* **network**: EfficientNet-Lite0 from the bundled ImageNet weights (frozen BN, stem and first two
  stages frozen), global average pool, one linear layer, a sigmoid per class trained with the
  detector's long-tail losses (``--loss``, default ``efl``);
* **re-scoring** of the ``--top-n`` (300) detections per slide ranked by their best score among the
  classifier's classes: each of those classes' score becomes the geometric mean of the detector's and
  the classifier's; the detections below the top N are not counted as abnormal (their scores for those
  classes become 0), as in the published two-stage systems.

Scored, each for the detector alone and with the second look:

* development (composited test split, held-out crops on the held-out part of the field): ROC AUC of
  the top 10 proposals per image, "a cell of a scored class" against background, and the images whose
  top proposal is such a cell;
* validation (the per-field output folders of ``benchmarks/real_fields.py``, never trained on), re-scored
  offline from their detections tables and patch stores, at the report thresholds: ``tct_marked`` top-1
  in a circle, counted abnormal outside circles and the rank of the best detection in a circle; CRIC
  nucleus hits; the CRIC mosaic call; the demo slide's planted high-grade cells and call.

The rule, fixed before the classifier was first scored: switch the second look on for the bundled
model only if it raises ``tct_marked`` top-1 in a circle by at least 2 fields, does not lower the demo's
planted high-grade cells found, and keeps CRIC NILM flagged <= 0.2. Nothing is tuned on validation.

    python benchmarks/real_fields.py --demo --out benchmarks/results/real_fields     # per-field folders
    python benchmarks/second_look.py train --out runs/second_look/second_look.pt     # ~50 min on 2 CPU cores
    python benchmarks/second_look.py evaluate --second-look runs/second_look/second_look.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsi_pipeline.aggregate.summary import class_thresholds, summarize  # noqa: E402
from wsi_pipeline.config import load_config  # noqa: E402
from wsi_pipeline.datasets.annotations import load_annotations  # noqa: E402
from wsi_pipeline.aggregate.cell_hits import HIGH_GRADE_CLASSES as HIGH_GRADE  # noqa: E402
from wsi_pipeline.errors import ArtifactError  # noqa: E402
from wsi_pipeline.fsutil import atomic_path  # noqa: E402
from wsi_pipeline.models.backbones import EfficientNetLiteBody, backbone_entry, load_weights  # noqa: E402
from wsi_pipeline.models.bundled import starter_model_path  # noqa: E402
from wsi_pipeline.aggregate.cell_hits import NucleusHitResult, circle_ranking, nucleus_hits, truth_from_annotations  # noqa: E402
from wsi_pipeline.models.checkpoint import load_checkpoint  # noqa: E402
from wsi_pipeline.models.data import CocoPatchDataset  # noqa: E402
from wsi_pipeline.models.losses import build_loss, prior_bias  # noqa: E402
from wsi_pipeline.models.torchfile import load_torch_file  # noqa: E402
from wsi_pipeline.progress import progress_bar  # noqa: E402
from wsi_pipeline.store.detections import Detections, read_detections  # noqa: E402
from wsi_pipeline.store.source import PatchSource, open_patch_source  # noqa: E402
from wsi_pipeline.synth.config import load_synth_config  # noqa: E402
from wsi_pipeline.taxonomy import load_taxonomy  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cytology"
BACKBONE = "efficientnet_lite0"
FORMAT = "wsi_pipeline.second_look"
log = logging.getLogger("second_look")


# ------------------------------------------------------------------ the classifier


@dataclass(frozen=True)
class SecondLookMeta:
    class_names: list[str]  # the classes it scores, a subset of the detector's taxonomy
    target_mpp: float  # pixel size of its windows (the detector's)
    window_px: int
    loss: str


class CropClassifier(nn.Module):
    """EfficientNet-Lite0 body (frozen BN), global average pool, one linear layer; uint8 ``(B, H, W, 3)`` in."""

    def __init__(self, num_classes: int, weights: str = "imagenet", trainable_layers: int = 4) -> None:
        super().__init__()
        self.body = EfficientNetLiteBody("efficientnet-lite0", frozen_batchnorm=True)
        if weights:
            load_weights(self.body, BACKBONE, weights)
        entry = backbone_entry(BACKBONE)
        trainable = [p for stage in entry.stages[:trainable_layers] for p in stage.split("|")]
        for name, parameter in self.body.named_parameters():
            if not any(name == t or name.startswith(t + ".") for t in trainable):
                parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(entry.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(entry.image_std).view(1, 3, 1, 1), persistent=False)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(entry.channels[-1], num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.constant_(self.fc.bias, prior_bias(0.05))

    def forward(self, windows: Tensor) -> Tensor:
        x = (windows.permute(0, 3, 1, 2).float().div(255.0) - self.mean) / self.std
        return self.fc(self.dropout(self.body(x)["2"].mean(dim=(2, 3))))


def save_second_look(path: Path, model: CropClassifier, meta: SecondLookMeta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "meta": asdict(meta), "state_dict": state}, tmp)
    return path


def load_second_look(path: Path) -> tuple[CropClassifier, SecondLookMeta]:
    data = load_torch_file(path, "second-look model")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(path, "not a second-look model (benchmarks/second_look.py train writes them)")
    meta = SecondLookMeta(**data["meta"])
    model = CropClassifier(len(meta.class_names), weights="")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()})
    return model.eval(), meta


def cut_windows(image: np.ndarray, centres: np.ndarray, window_px: int) -> np.ndarray:
    """``window_px`` squares of ``image`` centred on ``centres`` (x, y); outside the image is mirrored."""
    import cv2  # noqa: PLC0415

    half = window_px // 2
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REFLECT_101)
    out = np.empty((len(centres), window_px, window_px, 3), np.uint8)
    h, w = image.shape[:2]
    for i, (x, y) in enumerate(np.asarray(centres, np.float64).reshape(-1, 2)):
        cx, cy = int(np.clip(round(x), 0, w - 1)), int(np.clip(round(y), 0, h - 1))
        out[i] = padded[cy : cy + window_px, cx : cx + window_px]
    return out


def label_proposals(boxes: np.ndarray, truth_boxes: np.ndarray, truth_labels: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Per proposal: the class of the best-overlapping truth box holding its centre (IoU >= ``min_iou``), else -1."""
    from torchvision.ops import box_iou  # noqa: PLC0415

    labels = np.full(len(boxes), -1, np.int64)
    if not len(boxes) or not len(truth_boxes):
        return labels
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(truth_boxes, dtype=torch.float32)).numpy()
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = ((truth_boxes[None, :, 0] <= cx[:, None]) & (cx[:, None] <= truth_boxes[None, :, 2])
              & (truth_boxes[None, :, 1] <= cy[:, None]) & (cy[:, None] <= truth_boxes[None, :, 3]))
    iou = np.where(inside, iou, 0.0)
    best = iou.argmax(1)
    hit = iou[np.arange(len(boxes)), best] >= min_iou
    labels[hit] = np.asarray(truth_labels)[best[hit]]
    return labels


def combine_scores(detector_scores: np.ndarray, classifier_scores: np.ndarray) -> np.ndarray:
    """The geometric mean of the two stages' scores, per class."""
    return np.sqrt(np.clip(detector_scores, 0, 1) * np.clip(classifier_scores, 0, 1)).astype(np.float32)


@torch.inference_mode()
def classify_windows(model: nn.Module, windows: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Sigmoid class scores ``(N, C)`` for uint8 windows ``(N, H, W, 3)``."""
    model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(windows[i : i + batch_size]))).float().numpy()
           for i in range(0, len(windows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.fc.out_features), np.float32)


# ------------------------------------------------------------------ re-scoring a slide's detections


def windows_for(det: Detections, rows: np.ndarray, store: PatchSource, window_px: int) -> np.ndarray:
    """Windows centred on detections ``rows``, cut from the patch each was found in."""
    out = np.zeros((len(rows), window_px, window_px, 3), np.uint8)
    patch_of = det.patch_index[rows]
    for p in np.unique(patch_of):
        at = np.nonzero(patch_of == p)[0]
        boxes = det.boxes[rows[at]]
        origin = store.coords[int(p)]
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - origin[0], (boxes[:, 1] + boxes[:, 3]) / 2 - origin[1]], 1)
        out[at] = cut_windows(np.asarray(store.patches[int(p)]), centres / store.scale, window_px)
    return out


def review_detections(det: Detections, taxonomy: list[str], store: PatchSource, model: nn.Module,
                      meta: SecondLookMeta, top_n: int) -> Detections:
    """A copy of ``det`` with the classifier's classes re-scored on the ``top_n`` most suspicious rows."""
    columns = [taxonomy.index(n) for n in meta.class_names]
    class_scores = det.class_scores.copy()
    if not len(det):
        return det
    reviewed = np.argsort(-class_scores[:, columns].max(1), kind="stable")[:top_n]
    probs = classify_windows(model, windows_for(det, reviewed, store, meta.window_px))
    combined = combine_scores(class_scores[np.ix_(reviewed, columns)], probs)
    class_scores[np.ix_(np.setdiff1d(np.arange(len(det)), reviewed), columns)] = 0.0
    class_scores[np.ix_(reviewed, columns)] = combined
    labels = class_scores.argmax(1).astype(det.labels.dtype)
    return Detections(boxes=det.boxes, scores=class_scores.max(1).astype(np.float32), labels=labels,
                      patch_index=det.patch_index, class_scores=class_scores,
                      class_names=[taxonomy[i] for i in labels], meta=det.meta)


# ------------------------------------------------------------------ training


@dataclass
class Samples:
    """Window centres in a dataset's images: image index, x, y and class (-1: background)."""

    root: Path
    image_index: np.ndarray
    centres: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) index into class_names
    class_names: list[str]
    proposal_scores: np.ndarray  # detector suspicion; nan on truth windows

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {"background": int((self.labels < 0).sum()),
                **{n: int((self.labels == i).sum()) for i, n in enumerate(self.class_names)}}


@torch.inference_mode()
def collect_samples(root: Path, detector_path: Path, proposals_per_image: int, include_truth: bool,
                    class_names: list[str] | None = None, min_score: float = 0.05, batch_size: int = 16) -> Samples:
    """The detector's top proposals on every image of ``root``, labelled, plus (optionally) truth windows."""
    dataset = CocoPatchDataset(root)
    taxonomy = dataset.info.class_names
    present = sorted({int(a["category_id"]) - 1 for anns in dataset.annotations for a in anns})
    names = class_names or [taxonomy[i] for i in present]  # the classes this dataset can teach
    to_local = {taxonomy.index(n): i for i, n in enumerate(names)}
    columns = [taxonomy.index(n) for n in names]
    detector = load_checkpoint(detector_path).detector
    index, centres, labels, scores = [], [], [], []
    for start in progress_bar(range(0, len(dataset), batch_size), desc="proposals", unit="batch"):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        outputs = detector.predict(torch.stack([img for img, _ in batch]), score_threshold=min_score)
        for offset, ((_, target), out) in enumerate(zip(batch, outputs)):
            truth_boxes = target["boxes"].numpy()
            truth_local = np.array([to_local.get(int(c), -2) for c in target["labels"]], np.int64)
            suspicion = out["class_scores"][:, columns].max(1).values.numpy() if len(out["boxes"]) else np.zeros(0)
            top = np.argsort(-suspicion)[:proposals_per_image]
            boxes = out["boxes"].numpy()[top]
            lab = label_proposals(boxes, truth_boxes, truth_local)
            keep = lab != -2  # on a truth box of a class not scored here: left out
            parts = [(boxes[keep], lab[keep], suspicion[top][keep])]
            if include_truth:
                scored = truth_local >= 0
                parts.append((truth_boxes[scored], truth_local[scored], np.full(int(scored.sum()), np.nan)))
            for b, lab_part, s in parts:
                index += [start + offset] * len(b)
                centres.append(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1))
                labels.append(lab_part)
                scores.append(s)
    return Samples(Path(root), np.asarray(index, np.int64), np.concatenate(centres).reshape(-1, 2).astype(np.float32),
                   np.concatenate(labels).astype(np.int64), names, np.concatenate(scores).astype(np.float32))


class WindowDataset(Dataset):
    """Augmented windows around :class:`Samples` centres."""

    def __init__(self, samples: Samples, window_px: int, jitter_px: int = 6) -> None:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A  # noqa: PLC0415

        self.samples, self.window_px, self.jitter_px = samples, window_px, jitter_px
        self.dataset = CocoPatchDataset(samples.root)
        self.transform = A.Compose([
            A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.85, 1.15), keep_ratio=True, border_mode=1, p=0.5),
            A.HueSaturationValue(hue_shift_limit=9, sat_shift_limit=18, val_shift_limit=9, p=0.5),
            A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.ImageCompression(quality_range=(70, 100), p=0.3),
        ])
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.dataset.load_image(int(self.samples.image_index[i]))
        centre = self.samples.centres[i] + self.rng.integers(-self.jitter_px, self.jitter_px + 1, 2)
        window = self.transform(image=cut_windows(image, centre[None], self.window_px)[0])["image"]
        return torch.from_numpy(np.ascontiguousarray(window)), int(self.samples.labels[i])

    def worker_init(self, worker_id: int) -> None:
        self.rng = np.random.default_rng(worker_id + 1)


def train_classifier(samples: Samples, target_mpp: float, out: Path, window_px: int = 128, epochs: int = 5,
                     batch_size: int = 32, lr: float = 3e-4, loss: str = "efl", workers: int = 1) -> Path:
    """Fine-tune a :class:`CropClassifier` on ``samples`` (AdamW, cosine with 50 warm-up steps)."""
    torch.manual_seed(0)
    model = CropClassifier(len(samples.class_names))
    criterion = build_loss(loss, len(samples.class_names))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    data = WindowDataset(samples, window_px)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        worker_init_fn=data.worker_init if workers else None, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    total, step, started = epochs * len(loader), 0, time.perf_counter()
    warm = min(50, total // 10)
    log.info("%d windows %s, %d iterations", len(samples), samples.counts(), total)
    model.train()
    for epoch in range(epochs):
        losses = []
        for windows, labels in progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch"):
            factor = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            logits = model(windows)
            targets = torch.zeros_like(logits)
            positive = labels >= 0
            targets[positive.nonzero().squeeze(1), labels[positive]] = 1.0
            value = criterion(logits, targets, avg_factor=max(1.0, float(positive.sum())))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(value.item())
            step += 1
        log.info("epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, epochs, float(np.mean(losses)), time.perf_counter() - started)
    return save_second_look(out, model.eval(), SecondLookMeta(samples.class_names, target_mpp, window_px, loss))


# ------------------------------------------------------------------ scoring


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney ROC AUC (ties count half)."""
    from scipy.stats import rankdata  # noqa: PLC0415

    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return float("nan")
    return float((rankdata(scores)[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def development(data: Path, detector: Path, model: nn.Module, meta: SecondLookMeta) -> dict:
    """AUC and per-image top-1 of the detector's top 10 proposals on the composited test split."""
    s = collect_samples(data, detector, proposals_per_image=10, include_truth=False, class_names=meta.class_names)
    dataset = CocoPatchDataset(data)
    windows = np.empty((len(s), meta.window_px, meta.window_px, 3), np.uint8)
    for i in np.unique(s.image_index):  # each image decoded once, all its windows cut from it
        at = s.image_index == i
        windows[at] = cut_windows(dataset.load_image(int(i)), s.centres[at], meta.window_px)
    cls = classify_windows(model, windows).max(1)
    positive = s.labels >= 0
    out: dict = {"proposals": len(s), "cells": int(positive.sum())}
    for name, score in (("detector", s.proposal_scores), ("classifier", cls), ("combined", np.sqrt(s.proposal_scores * cls))):
        top1 = [bool(positive[at[np.argmax(score[at])]]) for i in np.unique(s.image_index)
                if positive[at := np.nonzero(s.image_index == i)[0]].any()]
        out[name] = {"auc": round(roc_auc(score, positive), 3), "top1": f"{sum(top1)}/{len(top1)}"}
    return out


def validation(results: Path, model: nn.Module, meta: SecondLookMeta, top_n: int) -> dict:
    cfg = load_config()
    taxonomy = load_taxonomy()
    thresholds, _ = class_thresholds(taxonomy, cfg.report)

    def both(folder: Path) -> dict[str, Detections]:
        det = read_detections(folder / "detections.parquet")
        store = open_patch_source(folder / "patches.zarr")
        return {"detector": det, "second_look": review_detections(det, taxonomy.names, store, model, meta, top_n)}

    out: dict = {}
    marks = json.loads((DATA / "tct_marked" / "marks.json").read_text())["fields"]
    tct: dict[str, list] = {"detector": [], "second_look": []}
    for name, circles in sorted(marks.items()):
        for key, d in both(results / "tct" / Path(name).stem).items():
            r = circle_ranking(d.boxes, d.class_scores, d.labels, d.scores, thresholds, taxonomy, [tuple(c) for c in circles])
            tct[key].append((bool(r.top_in_circle), r.counted_abnormal_outside, r.best_circle_rank))
    out["tct_marked"] = {k: {"top_in_circle": f"{sum(t for t, _, _ in v)}/{len(v)}", "outside": [o for _, o, _ in v],
                             "best_circle_rank": [r for _, _, r in v]} for k, v in tct.items()}
    aliases = load_synth_config(None, taxonomy).label_aliases
    cric = {"detector": NucleusHitResult(), "second_look": NucleusHitResult()}
    for image in sorted((DATA / "cric").glob("*.webp")):
        truth = truth_from_annotations(load_annotations(image.with_suffix(".geojson"), taxonomy, aliases))
        for key, d in both(results / "cric" / image.stem).items():
            cric[key] = cric[key].add(nucleus_hits(d.boxes, d.labels, d.scores, thresholds, taxonomy, truth))
    out["cric"] = {k: {"abnormal": f"{v.abnormal_found}/{v.abnormal_total}", "nilm_flagged": f"{v.nilm_flagged}/{v.nilm_total}"}
                   for k, v in cric.items()}
    out["cric_mosaic_call"] = {k: summarize(d, taxonomy, cfg.report).category.name
                               for k, d in both(results / "mosaic" / "cric_mosaic").items()}
    demo = results / "demo" / "demo_tct"
    if demo.is_dir():
        planted = [c for c in truth_from_annotations(load_annotations(results / "demo" / "slides" / "demo_tct.cells.geojson",
                                                                      taxonomy, {})) if c.class_name in HIGH_GRADE]
        found, calls = {}, {}
        for key, d in both(demo).items():
            found[key] = f"{nucleus_hits(d.boxes, d.labels, d.scores, thresholds, taxonomy, planted).abnormal_found}/{len(planted)}"
            calls[key] = summarize(d, taxonomy, cfg.report).category.name
        out["demo_high_grade_found"], out["demo_call"] = found, calls
    return out


# ------------------------------------------------------------------ command line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the classifier on the detector's proposals")
    t.add_argument("--data", type=Path, default=ROOT / "data" / "starter" / "train", help="COCO patch training set")
    t.add_argument("--detector", type=Path, default=None, help="default: the bundled starter model")
    t.add_argument("--out", type=Path, default=ROOT / "runs" / "second_look" / "second_look.pt")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--window-px", type=int, default=128)
    t.add_argument("--proposals-per-image", type=int, default=8)
    t.add_argument("--loss", default="efl")
    t.add_argument("--workers", type=int, default=1)
    e = sub.add_parser("evaluate", help="detector alone against detector + second look")
    e.add_argument("--second-look", type=Path, required=True)
    e.add_argument("--detector", type=Path, default=None, help="default: the bundled starter model")
    e.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "real_fields",
                   help="output folder of benchmarks/real_fields.py --demo (made with the same detector)")
    e.add_argument("--dev-data", type=Path, default=ROOT / "data" / "starter" / "test")
    e.add_argument("--top-n", type=int, default=300)
    e.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    detector = args.detector or starter_model_path()
    if args.command == "train":
        samples = collect_samples(args.data, detector, args.proposals_per_image, include_truth=True)
        mpp = float(CocoPatchDataset(args.data).info.target_mpp or 0.5)
        print(train_classifier(samples, mpp, args.out, args.window_px, args.epochs, loss=args.loss, workers=args.workers))
        return 0
    model, meta = load_second_look(args.second_look)
    record: dict = {"second_look": str(args.second_look), "top_n": args.top_n}
    if args.dev_data.is_dir():
        record["development"] = development(args.dev_data, detector, model, meta)
        print(f"development (composited test split): {json.dumps(record['development'])}")
    record["validation"] = validation(args.results, model, meta, args.top_n)
    for key, value in record["validation"].items():
        print(f"{key}: {json.dumps(value)}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
