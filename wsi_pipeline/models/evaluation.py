"""COCO box mAP of a detector on a patch dataset, per-class AP and the mean AP of the rare classes.

Uses faster-coco-eval when importable, else pycocotools (same numbers; the benchmark runs on
machines that may have only one of them).

Example:
    >>> ev = evaluate_detector(detector, CocoPatchDataset("data/val"), abnormal=["HSIL"])  # doctest: +SKIP
    >>> ev.map50_95, ev.per_class_ap["HSIL"], ev.rare_map                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..progress import progress_bar
from .data import CocoPatchDataset
from .detector import Detector

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """mAP@[.5:.95], mAP@.5, per-class AP@[.5:.95] (None: class absent from the dataset), rare mean."""

    map50_95: float
    map50: float
    per_class_ap: dict[str, float | None]
    per_class_ap50: dict[str, float | None]
    rare_classes: list[str]
    rare_map: float | None  # mean AP@[.5:.95] over rare classes present in the dataset
    rare_map50: float | None
    num_images: int
    num_boxes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text per-class table for logs and the console."""
        lines = [f"{'class':<8} {'boxes':>6} {'AP':>6} {'AP50':>6}"]
        for name, ap in self.per_class_ap.items():
            ap50 = self.per_class_ap50[name]
            rare = " *" if name in self.rare_classes else ""
            fmt = lambda v: "   n/a" if v is None else f"{v:6.3f}"  # noqa: E731
            lines.append(f"{name:<8} {self.num_boxes.get(name, 0):>6} {fmt(ap)} {fmt(ap50)}{rare}")
        lines.append(f"mAP {self.map50_95:.3f}  mAP50 {self.map50:.3f}  rare-class mAP "
                     f"{'n/a' if self.rare_map is None else f'{self.rare_map:.3f}'} (* rare/abnormal)")
        return "\n".join(lines)


def _coco_backend():
    try:
        from faster_coco_eval import COCO, COCOeval_faster  # noqa: PLC0415

        return COCO, COCOeval_faster
    except ImportError:
        from pycocotools.coco import COCO  # noqa: PLC0415
        from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

        return COCO, COCOeval


@torch.no_grad()
def predict_dataset(
    detector: Detector, dataset: CocoPatchDataset, batch_size: int = 8, score_threshold: float = 0.01,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """COCO result records (``bbox`` as x, y, w, h; ``category_id`` = class + 1) for every image."""
    results: list[dict[str, Any]] = []
    indices = list(range(len(dataset)))
    bar = progress_bar(total=len(indices), desc="evaluating", unit="patch", disable=not progress, leave=False)
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        images = torch.stack([img for img, _ in items])
        for (_, target), det in zip(items, detector.predict(images, score_threshold=score_threshold)):
            boxes = det["boxes"].cpu().numpy()
            for box, score, label in zip(boxes, det["scores"].cpu().tolist(), det["labels"].cpu().tolist()):
                x0, y0, x1, y1 = (float(v) for v in box)
                results.append({
                    "image_id": int(target["image_id"]), "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score),
                })
        bar.update(len(items))
    bar.close()
    return results


def coco_evaluate(gt: dict[str, Any], results: list[dict[str, Any]], rare_classes: list[str]) -> Evaluation:
    """Score ``results`` against the ground-truth COCO dict."""
    COCO, COCOeval = _coco_backend()
    gt = copy.deepcopy(gt)
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    for ann in gt["annotations"]:
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    names = [c["name"] for c in gt["categories"]]
    counts = {n: 0 for n in names}
    for ann in gt["annotations"]:
        counts[names[ann["category_id"] - 1]] += 1
    empty = Evaluation(0.0, 0.0, {n: (0.0 if counts[n] else None) for n in names},
                       {n: (0.0 if counts[n] else None) for n in names}, rare_classes,
                       0.0 if any(counts[n] for n in rare_classes) else None,
                       0.0 if any(counts[n] for n in rare_classes) else None, len(gt["images"]), counts)
    if not results or not gt["annotations"]:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, 300]
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"])  # T x R x K x A x M
    per_class, per_class50 = {}, {}
    for k, name in enumerate(names):
        if counts[name] == 0:
            per_class[name] = per_class50[name] = None
            continue
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(np.mean(np.clip(p, 0, None)))
        per_class50[name] = float(np.mean(np.clip(p[0], 0, None)))
    present = [v for v in per_class.values() if v is not None]
    present50 = [v for v in per_class50.values() if v is not None]
    rare = [per_class[n] for n in rare_classes if per_class.get(n) is not None]
    rare50 = [per_class50[n] for n in rare_classes if per_class50.get(n) is not None]
    return Evaluation(
        map50_95=float(np.mean(present)), map50=float(np.mean(present50)),
        per_class_ap=per_class, per_class_ap50=per_class50, rare_classes=list(rare_classes),
        rare_map=float(np.mean(rare)) if rare else None, rare_map50=float(np.mean(rare50)) if rare50 else None,
        num_images=len(gt["images"]), num_boxes=counts,
    )


def evaluate_detector(
    detector: Detector, dataset: CocoPatchDataset, rare_classes: list[str], batch_size: int = 8, progress: bool = True
) -> Evaluation:
    """Predict every image of ``dataset`` (no augmentation) and compute COCO metrics."""
    results = predict_dataset(detector, dataset, batch_size=batch_size, progress=progress)
    return coco_evaluate(dataset.coco, results, rare_classes)
