"""Copy-Paste of real labelled cell crops: onto synthetic slides, real backgrounds, or training patches.

A crop is turned into optical density against its own bright background, scaled from the crops'
resolution to the target's, jittered in scale, rotated, flipped, and given a soft alpha edge, then
multiplied into the target (``rgb * exp(-od)``), so pasted cells keep their stain and overlap naturally.
Crop folders follow ``../shared/data/cytology/cell_crops/<k>/<n>.jpg``; ``composite.crop_classes`` in
``configs/synth.yaml`` maps folder numbers to taxonomy classes (flora, herpes and actinomyces have
no taxonomy class and are skipped).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from .config import CompositeConfig


@dataclass(frozen=True)
class CropBank:
    """Real crops by taxonomy class.

    Example:
        >>> from wsi_pipeline.synth.config import load_synth_config
        >>> bank = CropBank.load("../shared/data/cytology/cell_crops", load_synth_config().composite)  # doctest: +SKIP
        >>> sorted(bank.crops)[:3]  # doctest: +SKIP
        ['AGC', 'ASC-H', 'ASC-US']
    """

    crops: dict[str, tuple[str, ...]]
    cfg: CompositeConfig

    @classmethod
    def load(cls, crops_dir: str | Path, cfg: CompositeConfig, split: str | None = None,
             test_fraction: float = 0.2) -> "CropBank":
        """Crops by class; ``split`` ("train" / "test") keeps only that side of the crop-level split
        that ``wsi data composite`` uses, so a demo slide can hold crops the starter model never saw."""
        from ..datasets.composite import split_files  # noqa: PLC0415

        root = Path(crops_dir)
        if not root.is_dir():
            raise ConfigError(root, "crops folder not found")
        crops: dict[str, list[str]] = {}
        for folder, name in cfg.crop_classes.items():
            if not (root / folder).is_dir():
                continue
            if split is None:
                files = sorted(str(p) for p in (root / folder).glob("*.jpg"))
            else:
                files = [str(p) for p in split_files(root / folder, split, test_fraction)]
            if files:
                crops.setdefault(name, []).extend(files)
        if not crops:
            folders = ", ".join(sorted(cfg.crop_classes))
            raise ConfigError(root, f"no crops found; expected <folder>/*.jpg for folders {folders}")
        return cls({k: tuple(v) for k, v in crops.items()}, cfg)

    def pick(self, class_name: str, rng: np.random.Generator) -> str | None:
        files = self.crops.get(class_name)
        return files[int(rng.integers(len(files)))] if files else None


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of an RGB uint8 image against its own bright background (97th percentile,
    at least 200): the background becomes ~0, so a pasted region adds only its cells."""
    rgb = rgb.astype(np.float32) + 1
    background = np.maximum(np.percentile(rgb.reshape(-1, 3), 97, axis=0), 200)
    return np.maximum(-np.log(np.minimum(rgb / background, 1.0)), 0).astype(np.float32)


@functools.lru_cache(maxsize=2048)
def _crop_density(path: str) -> np.ndarray:
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


def crop_od(path: str, seed: int, index: int, target_mpp: float, cfg: CompositeConfig) -> tuple[int, int, np.ndarray, tuple[int, int, int, int]]:
    """Transformed optical density of a crop file at ``target_mpp`` (see :func:`warp_od`); the same
    ``seed``/``index`` always give the same transform."""
    rng = np.random.default_rng([seed, index, 2])
    scale = cfg.crops_mpp / target_mpp * rng.uniform(1 - cfg.scale_jitter, 1 + cfg.scale_jitter)
    return warp_od(_crop_density(path), scale, cfg.feather_px, rng)


def paste_od(image: np.ndarray, od: np.ndarray, x0: int, y0: int) -> None:
    """Multiply density ``od`` into float RGB ``image`` in place with its top-left at ``(x0, y0)``
    (clipped at the borders): ``rgb * exp(-od)``, so pasted cells overlap like real ones."""
    h, w = image.shape[:2]
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(od.shape[1], w - x0), min(od.shape[0], h - y0)
    if sx1 <= sx0 or sy1 <= sy0:
        return
    image[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] *= np.exp(-od[sy0:sy1, sx0:sx1])


def paste_crops(
    image: np.ndarray,
    mpp: float,
    bank: CropBank,
    n: int,
    rng: np.random.Generator,
    classes: list[str] | None = None,
) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]:
    """Copy-Paste augmentation: paste ``n`` random real crops (of ``classes``, default all in the bank)
    into an RGB uint8 image at ``mpp`` um/px; returns the new image and the pasted (box xyxy, class).

    Example:
        >>> img = np.full((512, 512, 3), 240, np.uint8)
        >>> out, boxes = paste_crops(img, 0.5, bank, 3, np.random.default_rng(0))  # doctest: +SKIP
        >>> len(boxes)  # doctest: +SKIP
        3
    """
    classes = [c for c in (classes or sorted(bank.crops)) if c in bank.crops]
    if not classes or n <= 0:
        return image, []
    out = image.astype(np.float32)
    h, w = out.shape[:2]
    pasted = []
    for _ in range(n):
        name = classes[int(rng.integers(len(classes)))]
        path = bank.pick(name, rng)
        ox, oy, od, (bx0, by0, bx1, by1) = crop_od(path, int(rng.integers(2**31)), 0, mpp, bank.cfg)
        if bx1 - bx0 >= w or by1 - by0 >= h:
            continue
        cx = int(rng.integers(-bx0, w - bx1 + 1))
        cy = int(rng.integers(-by0, h - by1 + 1))
        paste_od(out, od, cx + ox, cy + oy)
        pasted.append(((cx + bx0, cy + by0, cx + bx1, cy + by1), name))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), pasted
