"""Copy-paste primitives shared by the synthetic slides (``synth/``) and the composited training patches
(``datasets/composite.py``): a crop's optical density against its own background, a random warp with a soft
edge, and pasting by multiplication (``rgb * exp(-od)``), so pasted cells keep their stain and overlap
naturally. Below both packages, so that neither imports the other for them.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .errors import ConfigError


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of an RGB uint8 image against its own bright background (97th percentile,
    at least 200): the background becomes ~0, so a pasted region adds only its cells."""
    rgb = rgb.astype(np.float32) + 1
    background = np.maximum(np.percentile(rgb.reshape(-1, 3), 97, axis=0), 200)
    return np.maximum(-np.log(np.minimum(rgb / background, 1.0)), 0).astype(np.float32)


@functools.lru_cache(maxsize=2048)
def crop_density(path: str) -> np.ndarray:
    """Optical density of a crop image file (cached: crops are pasted many times)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ConfigError(path, "cannot decode crop image")
    return optical_density(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def warp_od(od: np.ndarray, scale: float, feather_px: float, rng: np.random.Generator) -> tuple[int, int, np.ndarray, tuple[int, int, int, int]]:
    """Scale ``od`` by ``scale``, flip and rotate it at random, and fade its rectangle's edge over
    ``feather_px`` (target pixels). Returns the x/y offset of the result from the paste centre, the
    HxWx3 density, and the tight box of the visible content (density above a faint threshold)
    relative to the centre."""
    h, w = od.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    f = max(1, int(feather_px / scale))
    alpha[f // 2 : h - f // 2, f // 2 : w - f // 2] = 1
    alpha = cv2.GaussianBlur(alpha, (0, 0), f / 2 + 0.5)
    if rng.random() < 0.5:
        od, alpha = od[:, ::-1], alpha[:, ::-1]
    angle = rng.uniform(0, 360)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)) + 2, int(np.ceil(h * cos + w * sin)) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    warped = cv2.warpAffine(np.ascontiguousarray(od), m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    a = cv2.warpAffine(np.ascontiguousarray(alpha), m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    warped *= a[..., None]
    ox, oy = -(nw // 2), -(nh // 2)
    ys, xs = np.nonzero(warped.sum(2) > 0.25)
    if len(xs):
        box = (int(xs.min()) + ox, int(ys.min()) + oy, int(xs.max()) + 1 + ox, int(ys.max()) + 1 + oy)
    else:
        box = (ox, oy, ox + nw, oy + nh)
    return ox, oy, warped, box


def paste_od(image: np.ndarray, od: np.ndarray, x0: int, y0: int) -> None:
    """Multiply density ``od`` into float RGB ``image`` in place with its top-left at ``(x0, y0)``
    (clipped at the borders): ``rgb * exp(-od)``, so pasted cells overlap like real ones."""
    h, w = image.shape[:2]
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(od.shape[1], w - x0), min(od.shape[0], h - y0)
    if sx1 <= sx0 or sy1 <= sy0:
        return
    image[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] *= np.exp(-od[sy0:sy1, sx0:sx1])


__all__ = ["crop_density", "optical_density", "paste_od", "warp_od"]
