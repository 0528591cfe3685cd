"""The patch grid: level-0 positions of overlapping patches, and which of them the cell mask keeps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..resolution import level0_extent, level0_scale


@dataclass(frozen=True)
class GridSpec:
    """Patches of ``patch_size`` px at ``target_mpp`` overlapping by ``overlap`` px, in level-0 pixels.

    Example:
        >>> g = GridSpec(patch_size=512, overlap=128, target_mpp=0.5, slide_mpp=0.25)
        >>> g.scale, g.size0, g.stride0
        (2.0, 1024.0, 768.0)
    """

    patch_size: int
    overlap: int
    target_mpp: float
    slide_mpp: float

    @property
    def scale(self) -> float:
        """Level-0 pixels per patch pixel."""
        return level0_scale(self.target_mpp, self.slide_mpp)

    @property
    def size0(self) -> float:
        return level0_extent(self.patch_size, self.target_mpp, self.slide_mpp)

    @property
    def stride0(self) -> float:
        return (self.patch_size - self.overlap) * self.scale


def grid_positions(width: int, height: int, spec: GridSpec) -> np.ndarray:
    """(N, 2) int64 top-left corners covering the whole slide, row by row; the last row/column may run past
    the edge (read as white glass).

    Example:
        >>> grid_positions(2000, 1024, GridSpec(512, 128, 0.5, 0.25)).tolist()
        [[0, 0], [768, 0], [1536, 0]]
    """

    def axis(length: int) -> np.ndarray:
        n = 1 + max(0, math.ceil((length - spec.size0) / spec.stride0))
        return np.round(np.arange(n) * spec.stride0).astype(np.int64)

    xs, ys = axis(width), axis(height)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def patches_in_mask(positions: np.ndarray, size0: float, mask: np.ndarray, mask_mpp: float, slide_mpp: float,
                    min_fraction: float = 0.0) -> np.ndarray:
    """Boolean keep-flag per position: the patch covers more than ``min_fraction`` of mask pixels (any at 0).

    Example:
        >>> m = np.zeros((10, 10), bool); m[0, 0] = True
        >>> patches_in_mask(np.array([[0, 0], [64, 64]]), 32.0, m, 8.0, 1.0).tolist()
        [True, False]
    """
    factor = slide_mpp / mask_mpp  # mask px per level-0 px
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    x0 = np.clip(np.floor(positions[:, 0] * factor).astype(int), 0, w)
    y0 = np.clip(np.floor(positions[:, 1] * factor).astype(int), 0, h)
    x1 = np.clip(np.ceil((positions[:, 0] + size0) * factor).astype(int), 0, w)
    y1 = np.clip(np.ceil((positions[:, 1] + size0) * factor).astype(int), 0, h)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (inside > 0) & (inside >= min_fraction * area)


def covered_fraction(positions: np.ndarray, size0: float, shape: tuple[int, int], mask_mpp: float, slide_mpp: float) -> np.ndarray:
    """Boolean raster (at mask resolution) of the area the given patches cover."""
    factor = slide_mpp / mask_mpp
    covered = np.zeros(shape, bool)
    for x, y in positions:
        covered[int(y * factor) : math.ceil((y + size0) * factor), int(x * factor) : math.ceil((x + size0) * factor)] = True
    return covered
