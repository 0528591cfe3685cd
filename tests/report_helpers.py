"""Test helpers for reports: hand-made detections on the real-field test slide (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.store.detections import Detections, write_detections
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()

# (class, score, centre x, centre y, side) in level-0 px of the 1536 x 1024 test slide
CELLS = [
    ("NILM", 0.92, 200, 150, 60), ("NILM", 0.81, 600, 500, 70), ("NILM", 0.30, 900, 700, 50),
    ("INFL", 0.75, 1100, 300, 24), ("LSIL", 0.88, 400, 800, 64), ("LSIL", 0.71, 1300, 850, 58),
    ("HSIL", 0.95, 1000, 512, 40), ("HSIL", 0.40, 20, 20, 30),  # the second is below threshold
    ("TRICH", 0.66, 1500, 1000, 30),  # at the slide's corner: its crop must shift inside
]


def make_detections(path: Path, cells: list[tuple[str, float, float, float, float]], slide_info: dict,
                    complete: bool = True) -> Path:
    n = len(cells)
    labels = np.array([TAX.index(c[0]) for c in cells], np.int16)
    scores = np.array([c[1] for c in cells], np.float32)
    boxes = np.array([[x - s / 2, y - s / 2, x + s / 2, y + s / 2] for _, _, x, y, s in cells], np.float32).reshape(n, 4)
    class_scores = np.zeros((n, len(TAX)), np.float32)
    class_scores[np.arange(n), labels] = scores
    meta = {
        "taxonomy": TAX.names, "complete": complete, "slide": slide_info,
        "store": {"path": "/data/x/patches.zarr", "target_mpp": 0.5, "patch_size": 512, "overlap": 128,
                  "n_patches": 6, "cell_area_mm2": 0.25, "fingerprint": "f" * 64, "seconds": 3.5},
        "model": {"path": "/models/tct_retinanet.pt", "sha256": "a" * 64, "detector": "retinanet",
                  "backbone": "resnet18", "loss": "efl", "trained_on": "synthetic"},
        "inference": {"device": "cpu", "precision": "fp32", "seconds": 12.5, "score_threshold": 0.05, "nms_iou": 0.5},
    }
    write_detections(path, Detections(boxes, scores, labels, np.arange(n, dtype=np.int32), class_scores), meta)
    return path
