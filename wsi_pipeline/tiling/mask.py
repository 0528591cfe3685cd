"""Cell-area mask: which parts of a TCT slide hold stained cells, and which are empty glass.

A liquid-based (ThinPrep/TCT) slide is a disk of scattered single cells on bright glass, not a solid
tissue block, so the mask works per pixel of a low-resolution thumbnail: "stain" = 1 - min(R, G, B) / 255
(high for any coloured or dark pixel, ~0 for white glass), thresholded by Otsu (never below the glass
level + a margin, so an empty slide yields an empty mask), specks removed, then grown by ``dilate_um`` so
cells on the border of a blob and faint cytoplasm next to a nucleus stay inside kept patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

from ..config import MaskConfig

GLASS_MARGIN = 0.04  # stain units above the median (glass) level that a pixel needs to count as a cell


@dataclass
class CellMask:
    """The mask at ``mpp`` um/px, the stain threshold used and the cell area before dilation."""

    mask: np.ndarray  # bool, H x W at mpp
    mpp: float
    threshold: float
    cell_area_mm2: float


def stain_signal(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel stain strength in [0, 1]: 0 for white glass, high for coloured cytoplasm and dark nuclei.

    Example:
        >>> [round(float(v), 2) for v in stain_signal(np.array([[[255, 255, 255], [40, 30, 90]]], np.uint8))[0]]
        [0.0, 0.88]
    """
    return 1.0 - rgb.min(axis=2).astype(np.float32) / 255.0


def cell_area_mask(thumbnail: np.ndarray, mpp: float, cfg: MaskConfig) -> CellMask:
    """Mask of cell-bearing area on an RGB ``thumbnail`` taken at ``mpp`` um/px.

    Example:
        >>> glass = np.full((100, 100, 3), 240, np.uint8); glass[40:44, 50:54] = (60, 40, 120)
        >>> m = cell_area_mask(glass, 8.0, MaskConfig())
        >>> bool(m.mask[42, 52]), bool(m.mask[5, 5]), m.cell_area_mm2 > 0
        (True, False, True)
    """
    signal = cv2.GaussianBlur(stain_signal(thumbnail), (3, 3), 0)
    glass_level = float(np.median(signal))
    if cfg.method == "fixed":
        threshold = cfg.threshold
    else:
        otsu = float(threshold_otsu(signal)) if signal.max() > signal.min() else 1.0
        threshold = max(otsu, glass_level + GLASS_MARGIN)
    cells = signal > threshold
    min_px = int(cfg.min_object_um2 / (mpp * mpp))
    if min_px > 1:
        cells = remove_small_objects(cells, max_size=min_px)
    cell_area_mm2 = float(cells.sum()) * mpp * mpp / 1e6
    radius = int(round(cfg.dilate_um / mpp))
    if radius > 0 and cells.any():
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        cells = cv2.dilate(cells.astype(np.uint8), kernel).astype(bool)
    return CellMask(mask=cells, mpp=mpp, threshold=threshold, cell_area_mm2=cell_area_mm2)
