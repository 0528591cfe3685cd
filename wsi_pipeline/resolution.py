"""Resolution, in one place: the default pixel size, what counts as the same resolution, which slide
resolutions are plausible, and how many level-0 pixels an extent at another resolution covers.

Example:
    >>> DEFAULT_TARGET_MPP, same_mpp(0.5, 0.505), same_mpp(0.5, 0.25)
    (0.5, True, False)
    >>> level0_extent(256, 0.5, 0.25), plausible_mpp(352.8)
    (512.0, False)
"""

from __future__ import annotations

import math

DEFAULT_TARGET_MPP = 0.5  # um/px the detectors, patch stores and training sets work at unless configured
CROPS_MPP = 0.27  # estimated um/px of the bundled real cell crops (from nuclei and neutrophils: docs/model_card.md)
MPP_TOLERANCE = 0.02  # relative difference between two resolutions that still counts as the same
# Microscope scans sit between ~0.1 um/px (100x oil) and a few um/px (low-power overviews); a value outside
# this range is a wrong resolution tag (boxes.tiff reports ~353), not a real scan. Also the bounds of --mpp.
PLAUSIBLE_MPP = (0.1, 20.0)


def same_mpp(reference: float, other: float) -> bool:
    """``other`` is ``reference`` within :data:`MPP_TOLERANCE` (relative to ``reference``)."""
    return abs(reference - other) <= MPP_TOLERANCE * reference


def plausible_mpp(value: float | None) -> bool:
    """True when ``value`` (um/px) looks like a real scan resolution (:data:`PLAUSIBLE_MPP`)."""
    return value is not None and math.isfinite(value) and PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]


def level0_scale(mpp: float, slide_mpp: float) -> float:
    """Level-0 pixels per pixel at ``mpp`` um/px, on a slide of ``slide_mpp`` um/px."""
    return mpp / slide_mpp


def level0_extent(size_px: float, mpp: float, slide_mpp: float) -> float:
    """The level-0 pixels that ``size_px`` pixels at ``mpp`` um/px cover."""
    return size_px * level0_scale(mpp, slide_mpp)


__all__ = ["CROPS_MPP", "DEFAULT_TARGET_MPP", "MPP_TOLERANCE", "PLAUSIBLE_MPP", "level0_extent", "level0_scale",
           "plausible_mpp", "same_mpp"]
