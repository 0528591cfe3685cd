"""From patch boxes to slide boxes: level-0 mapping and merging of tile-overlap duplicates.

Patches overlap (``tiling.overlap``), so a cell near a patch border is detected more than once:

* seen **whole** in two patches: two nearly identical boxes, removed by class-aware IoU NMS
  (``torchvision.ops.batched_nms``);
* **cut** by the border of one patch and seen whole in the neighbour: a truncated box plus the
  whole box. When the visible sliver is small its IoU with the whole box is small too, so plain
  NMS would keep both. Boxes touching a patch border are therefore flagged *truncated*, ranked
  below every whole box, and a truncated box is dropped when at least ``ios_threshold`` of its
  area lies inside a better box of the same class from another patch (intersection over the
  smaller box, IoS). Among truncated views of one cell, the largest (most complete) one ranks
  first, whatever the scores.

A truncated box with no better partner (the neighbour was masked out as glass, the cell touches
the slide edge, or the cell is larger than the overlap) is kept as it is.

The work is done block by block (blocks one patch extent wide, each seen with its 8 neighbours),
so memory and time grow with the number of boxes, not with its square; within a block all
operations are vectorised torch ops.

Example:
    >>> import numpy as np
    >>> whole = [100, 100, 140, 130]           # a cell seen whole in patch 1
    >>> sliver = [100, 100, 110, 130]          # the same cell cut at patch 0's right border
    >>> keep = merge_overlaps(np.array([sliver, whole], np.float32), np.array([0.9, 0.6], np.float32),
    ...                       np.array([3, 3]), np.array([True, False]), np.array([0, 1]),
    ...                       iou_threshold=0.5, ios_threshold=0.6, block_size=512)
    >>> keep.tolist()                          # the whole box wins although its score is lower
    [1]
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

# whole boxes outrank truncated ones whatever their scores (scores are in [0, 1])
_WHOLE_BONUS = 2.0


def to_level0(boxes_patch: np.ndarray, origin_xy: np.ndarray, scale: float) -> np.ndarray:
    """Map boxes (K, 4) xyxy in patch pixels to level-0 pixels: ``origin + xy * scale``.

    ``origin_xy`` is the patch's level-0 top-left, one row per box (K, 2) or one (2,) for all.

    Example:
        >>> to_level0(np.array([[10, 20, 30, 40]], np.float32), np.array([1000, 2000]), 2.0).tolist()
        [[1020.0, 2040.0, 1060.0, 2080.0]]
    """
    origin = np.asarray(origin_xy, np.float64).reshape(-1, 2)
    xyxy = np.tile(origin, (1, 2))
    return (xyxy + np.asarray(boxes_patch, np.float64) * scale).astype(np.float32)


def touches_patch_border(boxes_patch: np.ndarray, patch_size: int, tolerance: float = 1.0) -> np.ndarray:
    """True for boxes (patch px) within ``tolerance`` px of any patch border: possibly a cut cell.

    Example:
        >>> touches_patch_border(np.array([[0, 5, 9, 9], [5, 5, 9, 9]], np.float32), 16).tolist()
        [True, False]
    """
    b = np.asarray(boxes_patch, np.float32).reshape(-1, 4)
    low = (b[:, 0] <= tolerance) | (b[:, 1] <= tolerance)
    high = (b[:, 2] >= patch_size - tolerance) | (b[:, 3] >= patch_size - tolerance)
    return low | high


def merge_overlaps(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    truncated: np.ndarray,
    patch_index: np.ndarray,
    *,
    iou_threshold: float,
    ios_threshold: float,
    block_size: float,
) -> np.ndarray:
    """Indices (sorted) of the boxes to keep after merging tile-overlap duplicates, class-aware.

    ``boxes`` are level-0 xyxy; ``block_size`` must be at least the largest box extent (one
    patch extent in level-0 px is always enough). See the module docstring for the rules.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float32).reshape(n, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    cell = np.floor((centre - centre.min(axis=0)) / float(block_size)).astype(np.int64) + 1  # >= 1
    width = int(cell[:, 0].max()) + 2
    key = cell[:, 1] * width + cell[:, 0]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    tensors = (
        torch.from_numpy(boxes),
        torch.from_numpy(np.asarray(scores, np.float32)),
        torch.from_numpy(np.asarray(labels, np.int64)),
        torch.from_numpy(np.asarray(truncated, bool)),
        torch.from_numpy(np.asarray(patch_index, np.int64)),
    )
    kept: list[np.ndarray] = []
    for block in np.unique(sorted_key):  # a loop over spatial blocks, never over boxes
        context = np.concatenate(
            [
                order[np.searchsorted(sorted_key, block + dy * width - 1, "left"):
                      np.searchsorted(sorted_key, block + dy * width + 1, "right")]
                for dy in (-1, 0, 1)
            ]
        )
        centre = torch.from_numpy(key[context] == block)  # the context only informs these boxes' fate
        kept.append(context[_merge_local(*(t[torch.from_numpy(context)] for t in tensors), centre,
                                         iou_threshold, ios_threshold)])
    return np.sort(np.concatenate(kept))


def _merge_local(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    truncated: torch.Tensor,
    patch_index: torch.Tensor,
    centre: torch.Tensor,
    iou_threshold: float,
    ios_threshold: float,
) -> np.ndarray:
    """Positions (into the given boxes) of the ``centre`` boxes that survive IoU NMS and the cut-cell rule.

    NMS runs over every given box (a neighbour may suppress a centre box), but the cut-cell test is a
    (truncated centre boxes) x (kept boxes) comparison: the other rows' answers would be thrown away.
    """
    area = box_area(boxes)
    # whole boxes first, by score; then truncated boxes, the most complete (largest) view first
    rank = torch.where(truncated, area / area.max().clamp(min=1e-6), _WHOLE_BONUS + scores)
    keep = batched_nms(boxes, rank, labels, iou_threshold)  # sorted by rank, best first
    rows = torch.nonzero(truncated[keep] & centre[keep]).flatten()  # positions in keep
    cut = keep[rows]  # the boxes the test decides, each against every kept box
    kb, rb = boxes[keep], boxes[cut]
    top_left = torch.maximum(rb[:, None, :2], kb[None, :, :2])
    bottom_right = torch.minimum(rb[:, None, 2:], kb[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    ios = inter / area[cut].clamp(min=1e-6)[:, None]  # row i: share of box i inside box j
    better = torch.arange(len(keep))[None, :] < rows[:, None]  # j ranked above i
    partner = (
        better
        & (labels[cut][:, None] == labels[keep][None, :])
        & (patch_index[cut][:, None] != patch_index[keep][None, :])
        & (ios >= ios_threshold)
    )
    cut_inside_better = torch.zeros(len(keep), dtype=torch.bool)
    cut_inside_better[rows[partner.any(dim=1)]] = True
    return keep[centre[keep] & ~cut_inside_better].numpy()
