"""Test helpers for inference: hand-built patch stores and a detector stand-in that answers from ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from wsi_pipeline.store.contracts import SlideInfo
from wsi_pipeline.store.patches import PatchStore
from wsi_pipeline.taxonomy import load_taxonomy
from wsi_pipeline.tiling.grid import GridSpec, grid_positions

TAXONOMY = load_taxonomy().names


def make_store(path: Path, image: np.ndarray, slide_mpp: float, target_mpp: float, patch_size: int, overlap: int,
               patches_per_chunk: int = 4, complete: bool = True, codec: str = "zstd") -> PatchStore:
    """A patch store cut from ``image`` (the slide's level 0) like tiling does: area-resampled, white outside."""
    spec = GridSpec(patch_size, overlap, target_mpp, slide_mpp)
    scale, extent = spec.scale, int(round(spec.size0))
    h, w = image.shape[:2]
    coords = grid_positions(w, h, spec)  # the grid `wsi tile` cuts
    store = PatchStore.create(path, coords, patch_size=patch_size, overlap=overlap, target_mpp=target_mpp,
                              scale=scale, level=0, slide_info=SlideInfo(name="test", path="test.tif", width=w,
                                                                       height=h, mpp=[slide_mpp, slide_mpp]),
                              identity=f"test-{path.name}", codec=codec, patches_per_chunk=patches_per_chunk,
                              extra={"cell_area_mm2": 1.0})
    for chunk in range(store.n_chunks):
        sl = store.chunk_slice(chunk)
        patches = []
        for x, y in coords[sl]:
            region = np.full((extent, extent, 3), 255, np.uint8)
            crop = image[y:y + extent, x:x + extent]
            region[:crop.shape[0], :crop.shape[1]] = crop
            patches.append(cv2.resize(region, (patch_size, patch_size), interpolation=cv2.INTER_AREA))
        store.write_chunk(chunk, np.stack(patches))
    if complete:
        store.mark_complete(cell_area_mm2=1.0)
    return PatchStore.open(path, require_complete=False)


@dataclass
class GroundTruthDetector:
    """Returns, for each patch it is shown, the ground-truth boxes visible in it, clipped at the patch border.

    Patches are recognised by their pixels (a hash of each patch read from the store), so the stand-in
    also checks that the engine feeds the right patches. Cut views get a HIGHER score than whole
    views, so merging by score alone would keep the wrong box.
    """

    store: PatchStore
    gt_boxes: np.ndarray  # (G, 4) level-0 xyxy
    gt_labels: np.ndarray  # (G,)
    fail_after_calls: int | None = None  # raise on this call (simulates an interruption)
    calls: int = 0
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {}
        for i in range(self.store.n_patches):
            self._index.setdefault(np.asarray(self.store.patches[i]).tobytes(), i)
        assert len(self._index) == self.store.n_patches, "test slide must give every patch distinct pixels"

    def predict(self, images: torch.Tensor, score_threshold: float = 0.05) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        if self.fail_after_calls is not None and self.calls > self.fail_after_calls:
            raise RuntimeError("simulated interruption")
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[-1] == 3
        return [self._one(self._index[img.cpu().numpy().tobytes()]) for img in images]

    def _one(self, index: int) -> dict[str, torch.Tensor]:
        self.seen.append(index)
        p, scale = self.store.patch_size, self.store.scale
        origin = np.tile(self.store.coords[index], 2)
        boxes = (self.gt_boxes - origin) / scale
        clipped = np.clip(boxes, 0, p)
        visible = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
        cut = (np.abs(clipped - boxes) > 1e-6).any(axis=1)
        labels = self.gt_labels[visible]
        scores = np.where(cut[visible], 0.9, 0.6).astype(np.float32)
        class_scores = np.full((len(labels), len(TAXONOMY)), 0.01, np.float32)
        class_scores[np.arange(len(labels)), labels] = scores
        return {"boxes": torch.from_numpy(clipped[visible].astype(np.float32)), "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(labels.astype(np.int64)), "class_scores": torch.from_numpy(class_scores)}


def stand_in_model(detector: GroundTruthDetector, target_mpp: float, patch_size: int) -> SimpleNamespace:
    return SimpleNamespace(detector=detector, meta={"taxonomy": TAXONOMY, "target_mpp": target_mpp,
                                                    "patch_size": patch_size, "sha256": "ground-truth-stand-in",
                                                    "architecture": "stand-in"})


def random_cells(rng: np.random.Generator, width: int, height: int, n: int, min_size: int, max_size: int,
                 on_edges: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping cell boxes (level-0 xyxy) with class labels; some touch the slide's edges."""
    boxes: list[list[float]] = []
    while len(boxes) < n:
        w, h = rng.uniform(min_size, max_size, 2)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if on_edges and len(boxes) < 4:  # one cell on each slide edge
            x, y = [(0, y), (width - w, y), (x, 0), (x, height - h)][len(boxes)]
        cand = [x, y, x + w, y + h]
        if all(cand[0] > b[2] + 2 or cand[2] < b[0] - 2 or cand[1] > b[3] + 2 or cand[3] < b[1] - 2 for b in boxes):
            boxes.append(cand)
    return np.array(boxes, np.float64), rng.integers(0, len(TAXONOMY), n)


def noise_slide(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    return rng.integers(180, 256, (height, width, 3), dtype=np.uint8)
