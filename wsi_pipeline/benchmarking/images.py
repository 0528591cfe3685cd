"""Real-field images for the benchmarks: read as RGB, the real TCT field ``lbc_field.jpg`` resampled from
its estimated pixel size to the pipeline's, patches cut from it, and windows centred on points."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from ..io.tiffwriter import mirrored_tiling, write_pyramidal_tiff
from . import CYTOLOGY

LBC_FIELD = CYTOLOGY / "lbc_field.jpg"  # one real TCT field, 4096 x 2816 (ComparisonDetector project)
LBC_FIELD_MPP = 0.27  # estimated (docs/model_card.md)
SLIDE_MPP = 0.5  # the pixel size the field is resampled to (the starter model's)


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``(h, w, 3)``; ``OSError`` when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resampled_field(mpp: float = SLIDE_MPP) -> np.ndarray:
    """The real TCT field, RGB, resampled from its estimated pixel size to ``mpp``."""
    scale = LBC_FIELD_MPP / mpp
    return cv2.resize(read_rgb(LBC_FIELD), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def mirrored_field_slide(size: int, cache: Path) -> Path:
    """A SIZE x SIZE px pyramidal slide at :data:`SLIDE_MPP` of mirrored copies of the resampled real TCT field,
    cells filling all of it; built once into ``cache`` (minutes for 60,000 px) and reused."""
    path = Path(cache) / f"tct_field_{size}.svs"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_pyramidal_tiff(path, size, size, mirrored_tiling(resampled_field()), mpp=SLIDE_MPP, tile_size=512, quality=85)
    print(f"built {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def field_patches(n: int, size: int = 256, seed: int = 0):
    """``n`` uint8 patches ``(n, size, size, 3)`` (a torch tensor) from random places of the mirrored,
    resampled real field."""
    import torch  # noqa: PLC0415

    read = mirrored_tiling(resampled_field())
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([read(int(x), int(y), size, size) for x, y in rng.integers(0, 4000, (n, 2))]))


def cut_windows(image: np.ndarray, centres: np.ndarray, window_px: int) -> np.ndarray:
    """``window_px`` squares of ``image`` centred on ``centres`` (x, y); outside the image is mirrored.

    Example:
        >>> image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
        >>> bool((cut_windows(image, np.array([[10.0, 10.0]]), 8)[0] == image[6:14, 6:14]).all())
        True
    """
    half = window_px // 2
    padded = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_REFLECT_101)
    out = np.empty((len(centres), window_px, window_px, 3), np.uint8)
    h, w = image.shape[:2]
    for i, (x, y) in enumerate(np.asarray(centres, np.float64).reshape(-1, 2)):
        cx, cy = int(np.clip(round(x), 0, w - 1)), int(np.clip(round(y), 0, h - 1))
        out[i] = padded[cy : cy + window_px, cx : cx + window_px]
    return out
