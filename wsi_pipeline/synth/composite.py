"""Copy-Paste of real labelled cell crops: onto synthetic slides, real backgrounds, or training patches.

A crop is turned into optical density against its own bright background, scaled from the crops'
resolution to the target's, jittered in scale, rotated, flipped, and given a soft alpha edge, then
multiplied into the target (``rgb * exp(-od)``), so pasted cells keep their stain and overlap naturally.
Crop folders follow ``../shared/data/cytology/cell_crops/<k>/<n>.jpg``; ``composite.crop_classes`` in
``configs/synth.yaml`` maps folder numbers to taxonomy classes (flora, herpes and actinomyces have
no taxonomy class and are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..paste import crop_density, paste_od, warp_od
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


def crop_od(path: str, seed: int, index: int, target_mpp: float, cfg: CompositeConfig) -> tuple[int, int, np.ndarray, tuple[int, int, int, int]]:
    """Transformed optical density of a crop file at ``target_mpp`` (see :func:`warp_od`); the same
    ``seed``/``index`` always give the same transform."""
    rng = np.random.default_rng([seed, index, 2])
    scale = cfg.crops_mpp / target_mpp * rng.uniform(1 - cfg.scale_jitter, 1 + cfg.scale_jitter)
    return warp_od(crop_density(path), scale, cfg.feather_px, rng)


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
