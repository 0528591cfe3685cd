"""Nuclear morphometry of one cell: nucleus area (um^2) and nucleus-to-cell ratio, classical segmentation.

What a cytologist reads beside the detector's class: how large the nucleus is, against the slide's
own normal nuclei, and how much of its cell it fills. The numbers are **evidence for the person
reading the slide, not a diagnosis**: they come from a classical threshold segmentation that works on
single, in-focus squamous cells and misreads merged neutrophil clusters, thick clumps and overlaps.

Method (measured on real CRIC conventional Pap fields and real TCT fields; docs/report.md), every size in um
converted with the crop's pixel size:

* signal: optical density of the red plus green channels, Gaussian-smoothed (sigma 0.9 um), white
  top-hat with a disk of radius 12 um (removes cytoplasm and background);
* cell area (foreground): CIE lightness below its 95th percentile minus 6, or chroma above 12;
* seeds: local maxima of the top-hat blurred at sigma 1.5 um, at least 3 um apart, above the Otsu
  threshold of the top-hat inside the cell area; the crop centre is always a seed too;
* per seed: Otsu threshold of the signal in a +-14 um window, opening 0.6 um, closing 1 um, fill
  holes, opening 1.5 um; keep the piece holding the seed. A piece that touches the window edge,
  covers more than 30% of the window or 500 um^2, or has solidity below 0.8, is re-thresholded at
  the Otsu threshold of the upper class (up to 4 times);
* pieces of 6-500 um^2 are kept; touching nuclei are split by a distance-transform watershed
  (markers: h-domes of the distance, h 0.8 um);
* the cell's nucleus is the one under the given centre, else the nearest within ``max_offset_um``;
* its cell territory is the part of the cell area nearer to it than to any other nucleus, within
  30 um of it; N/C = nucleus area / territory area (the territory includes the nucleus).

Example (a drawn cell: dark 10 um disc in a pale 40 um cell on white, 0.25 um/px):
    >>> import cv2
    >>> img = np.full((288, 288, 3), 245, np.uint8)
    >>> _ = cv2.circle(img, (144, 144), 80, (200, 170, 190), -1)   # cytoplasm, radius 20 um
    >>> _ = cv2.circle(img, (144, 144), 20, (70, 60, 120), -1)     # nucleus, radius 5 um
    >>> round(float((img[..., 0] == 70).sum()) * 0.25 ** 2, 1)     # drawn nucleus area, um^2
    78.6
    >>> m = measure_nucleus(img, 0.25, (144, 144))
    >>> m.found, m.area_um2, m.nc_ratio
    (True, 80.81, 0.0644)
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import color, filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

log = logging.getLogger(__name__)

# Method parameters, in um (see the module docstring and /docs/report.md "Nuclear morphometry").
SMOOTH_UM = 0.9
TOPHAT_RADIUS_UM = 12.0
SEED_SMOOTH_UM = 1.5
SEED_SPACING_UM = 3.0
WINDOW_HALF_UM = 14.0
OPEN_UM, CLOSE_UM, CUT_UM = 0.6, 1.0, 1.5
MAX_WINDOW_SHARE = 0.30
MIN_AREA_UM2, MAX_AREA_UM2 = 6.0, 500.0
MIN_SOLIDITY = 0.8
RETHRESHOLDS = 4
WATERSHED_H_UM = 0.8
TERRITORY_CAP_UM = 30.0
MAX_OFFSET_UM = 10.0
CROP_UM = 72.0  # side of the window read around a cell: a nucleus near its centre and its territory cap


@dataclass(frozen=True)
class NucleusMeasure:
    """One cell's nucleus: area (um^2), cell territory area (um^2) and N/C; all ``None`` when no nucleus was found."""

    area_um2: float | None
    cell_area_um2: float | None
    nc_ratio: float | None

    @property
    def found(self) -> bool:
        return self.area_um2 is not None


NOT_FOUND = NucleusMeasure(None, None, None)


def _px(um: float, mpp: float) -> float:
    return um / mpp


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _morph(mask: np.ndarray, op: int, kernel: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(mask.astype(np.uint8), op, kernel).astype(bool)


def nucleus_signal(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Top-hat of the smoothed optical density of red + green (float32, same size as ``rgb``)."""
    rg = rgb[..., :2].astype(np.float32)
    od = -np.log((rg + 1.0) / 256.0).sum(axis=2)
    od = cv2.GaussianBlur(od, (0, 0), _px(SMOOTH_UM, mpp))
    return cv2.morphologyEx(od, cv2.MORPH_TOPHAT, _disk(_px(TOPHAT_RADIUS_UM, mpp)), borderType=cv2.BORDER_REFLECT)


def cell_area_mask(rgb: np.ndarray) -> np.ndarray:
    """Stained (cell) pixels: CIE lightness below its 95th percentile minus 6, or chroma above 12."""
    lab = color.rgb2lab(rgb)
    lightness = lab[..., 0]
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return (lightness < np.percentile(lightness, 95) - 6) | (chroma > 12)


def _seed_piece(signal: np.ndarray, seed: tuple[int, int], mpp: float) -> np.ndarray | None:
    """The nucleus piece grown from ``seed`` (row, col) by local Otsu thresholds; a full-size mask or None."""
    h, w = signal.shape
    half = int(round(_px(WINDOW_HALF_UM, mpp)))
    r, c = seed
    r0, r1, c0, c1 = max(0, r - half), min(h, r + half + 1), max(0, c - half), min(w, c + half + 1)
    win = signal[r0:r1, c0:c1]
    if win.size < 16 or float(win.max()) <= float(win.min()):
        return None
    px_area = mpp * mpp
    open_fp, close_fp, cut_fp = _disk(_px(OPEN_UM, mpp)), _disk(_px(CLOSE_UM, mpp)), _disk(_px(CUT_UM, mpp))
    values = win.ravel()
    threshold = filters.threshold_otsu(values)
    for attempt in range(RETHRESHOLDS + 1):
        mask = win > threshold
        mask = _morph(mask, cv2.MORPH_OPEN, open_fp)
        mask = _morph(mask, cv2.MORPH_CLOSE, close_fp)
        mask = ndi.binary_fill_holes(mask)
        mask = _morph(mask, cv2.MORPH_OPEN, cut_fp)
        labels = measure.label(mask)
        own = labels[r - r0, c - c0]
        if own == 0:
            return None  # the seed is not in a nucleus at this threshold (or fell off a re-threshold)
        piece = labels == own
        area = int(piece.sum())
        touches = piece[0].any() or piece[-1].any() or piece[:, 0].any() or piece[:, -1].any()
        props = measure.regionprops(piece.astype(np.uint8))[0]
        too_big = area > MAX_WINDOW_SHARE * win.size or area * px_area > MAX_AREA_UM2
        if not (touches or too_big or props.solidity < MIN_SOLIDITY) or attempt == RETHRESHOLDS:
            break
        upper = values[values > threshold]
        if upper.size < 2 or float(upper.max()) <= float(upper.min()):
            break
        threshold = filters.threshold_otsu(upper)
    full = np.zeros_like(signal, bool)
    full[r0:r1, c0:c1] = piece
    return full


def segment_nuclei(rgb: np.ndarray, mpp: float, extra_seeds: list[tuple[int, int]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Label image of the nuclei in ``rgb`` (0 = none) and the cell-area mask.

    ``extra_seeds`` (row, col) are grown besides the automatic seeds (the cell centre, so the
    measured cell is never missed for want of a seed).
    """
    signal = nucleus_signal(rgb, mpp)
    cells = cell_area_mask(rgb)
    seed_map = cv2.GaussianBlur(signal, (0, 0), _px(SEED_SMOOTH_UM, mpp))
    inside = signal[cells]
    seeds: list[tuple[int, int]] = []
    if inside.size > 16 and float(inside.max()) > float(inside.min()):
        floor = filters.threshold_otsu(inside)
        peaks = peak_local_max(seed_map, min_distance=max(1, int(round(_px(SEED_SPACING_UM, mpp)))),
                               threshold_abs=floor, exclude_border=False, labels=cells.astype(np.uint8))
        seeds += [(int(r), int(c)) for r, c in peaks]
    seeds += [(int(r), int(c)) for r, c in extra_seeds]  # last: skipped when already inside a nucleus
    union = np.zeros(signal.shape, bool)
    for seed in seeds:
        if union[seed]:
            continue  # already inside a grown nucleus
        piece = _seed_piece(signal, seed, mpp)
        if piece is not None:
            union |= piece
    px_area = mpp * mpp
    nuclei = np.zeros(union.shape, np.int32)
    n = 0
    for region in measure.regionprops(measure.label(union)):
        if not MIN_AREA_UM2 <= region.area * px_area <= MAX_AREA_UM2:
            continue
        # split touching nuclei: watershed of the distance transform from its h-maxima (one piece at a time)
        r0, c0, r1, c1 = region.bbox
        piece = np.pad(region.image, 1)
        dist = ndi.distance_transform_edt(piece)
        # markers: the h-domes (peaks at least h above the saddle to any higher peak). Their support, not
        # skimage's h_maxima, so two equal peaks over a shallow saddle (a round nucleus) stay one marker
        h = _px(WATERSHED_H_UM, mpp)
        domes = dist - morphology.reconstruction(np.maximum(dist - h, 0), dist, method="dilation")
        markers = measure.label(domes > 1e-6)
        split = segmentation.watershed(-dist, markers, mask=piece)[1:-1, 1:-1]
        inside = split > 0
        nuclei[r0:r1, c0:c1][inside] = split[inside] + n
        n += int(split.max())
    return nuclei, cells


def measure_nucleus(rgb: np.ndarray, mpp: float, center: tuple[float, float],
                    max_offset_um: float = MAX_OFFSET_UM) -> NucleusMeasure:
    """Segment the nucleus of the cell at ``center`` (x, y in crop px) of an RGB crop at ``mpp`` um/px.

    Returns :data:`NOT_FOUND` when no nucleus lies under the centre or within ``max_offset_um`` of it.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3 or min(rgb.shape[:2]) < 8 or not mpp or mpp <= 0:
        return NOT_FOUND
    rgb = np.ascontiguousarray(rgb[..., :3], np.uint8)
    h, w = rgb.shape[:2]
    cx, cy = int(np.clip(round(center[0]), 0, w - 1)), int(np.clip(round(center[1]), 0, h - 1))
    labels, cells = segment_nuclei(rgb, mpp, extra_seeds=[(cy, cx)])
    if not labels.any():
        return NOT_FOUND
    own = int(labels[cy, cx])
    if own == 0:
        dist, (rows, cols) = ndi.distance_transform_edt(labels == 0, return_indices=True)
        if dist[cy, cx] > _px(max_offset_um, mpp):
            return NOT_FOUND
        own = int(labels[rows[cy, cx], cols[cy, cx]])
    area, cell_area = nucleus_and_territory_areas(labels, cells, mpp)
    return NucleusMeasure(round(float(area[own]), 2), round(float(cell_area[own]), 2),
                          round(float(area[own] / cell_area[own]), 4))


def nucleus_and_territory_areas(labels: np.ndarray, cells: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Area (um^2) of every nucleus of ``labels`` and of its cell territory, indexed by label (index 0 unused).

    The territory of a nucleus is the cell-area pixels nearer to it than to any other nucleus and
    within ``TERRITORY_CAP_UM`` of it, plus the nucleus itself.
    """
    dist, (rows, cols) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[rows, cols]
    territory = np.where((cells & (dist <= _px(TERRITORY_CAP_UM, mpp))) | (labels > 0), nearest, 0)
    n = int(labels.max()) + 1
    px_area = mpp * mpp
    return (np.bincount(labels.ravel(), minlength=n) * px_area, np.bincount(territory.ravel(), minlength=n) * px_area)


def ratio_to_reference(areas: list[float | None] | np.ndarray, reference_areas: list[float | None] | np.ndarray
                       ) -> tuple[np.ndarray, float | None]:
    """Each area divided by the median of ``reference_areas`` (the slide's NILM nuclei).

    Missing values (None / NaN) stay NaN; with no reference area at all the median is ``None`` and
    every ratio NaN.

    Example:
        >>> r, med = ratio_to_reference([60.0, None, 30.0], [20.0, 30.0, None, 40.0])
        >>> med, [None if math.isnan(v) else round(float(v), 2) for v in r]
        (30.0, [2.0, None, 1.0])
    """
    a = np.array([np.nan if v is None else v for v in areas], np.float64)
    ref = np.array([np.nan if v is None else v for v in reference_areas], np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(a.shape, np.nan), None
    median = float(np.median(ref))
    return a / median, median


MAX_WORKERS = 4  # processes of an automatic pool (report.morphometry_workers: 0)


def _measure_job(job: tuple[np.ndarray, tuple[float, float], float]) -> NucleusMeasure:
    crop, center, mpp = job
    return measure_nucleus(crop, mpp, center)


@contextmanager
def nucleus_measurer(workers: int) -> Iterator[Callable[[list[tuple[np.ndarray, tuple[float, float]]], float], list[NucleusMeasure]]]:
    """A function measuring a batch of ``(crop, centre)`` at one pixel size: :func:`measure_nucleus` on each, in
    ``workers`` processes (0: one per CPU core, at most :data:`MAX_WORKERS`; 1: in this process).

    The segmentation holds the GIL (threads measured 1.02x on 2 cores), so the pool is of processes, started
    with ``spawn`` (safe from threaded callers such as Dask workers). The results are those of the loop.

    Example:
        >>> crop = np.full((64, 64, 3), 240, np.uint8)
        >>> with nucleus_measurer(1) as measure:
        ...     measure([(crop, (32.0, 32.0))], 0.5)
        [NucleusMeasure(area_um2=None, cell_area_um2=None, nc_ratio=None)]
    """
    n = min(os.cpu_count() or 1, MAX_WORKERS) if workers == 0 else workers
    if n <= 1:
        yield lambda crops, mpp: [measure_nucleus(c, mpp, ctr) for c, ctr in crops]
        return
    log.info("measuring nuclei in %d processes", n)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda crops, mpp: list(pool.map(_measure_job, [(c, ctr, mpp) for c, ctr in crops], chunksize=8))


__all__ = ["CROP_UM", "MAX_WORKERS", "NOT_FOUND", "NucleusMeasure", "cell_area_mask", "measure_nucleus",
           "nucleus_and_territory_areas", "nucleus_measurer",
           "nucleus_signal",
           "ratio_to_reference", "segment_nuclei"]
