"""COCO patch datasets for training and evaluation, cytology augmentation, repeat-factor sampling.

Dataset layout (what ``wsi data build`` / ``wsi data composite`` / ``wsi synth dataset`` write)::

    DIR/images/*.jpg
    DIR/annotations.json   COCO; categories = taxonomy classes in order, id = index + 1;
                           info: target_mpp, patch_size, taxonomy (class names)

Example:
    >>> ds = CocoPatchDataset("tests_data/tiny")            # doctest: +SKIP
    >>> image, target = ds[0]                               # doctest: +SKIP
    >>> image.shape, target["boxes"].shape[1]               # doctest: +SKIP
    (torch.Size([3, 256, 256]), 4)
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from ..config import AugmentConfig
from ..errors import ArtifactError


@dataclass(frozen=True)
class CocoInfo:
    """What a dataset says about itself."""

    class_names: list[str]
    target_mpp: float | None
    patch_size: int | None


def read_coco(root: str | Path) -> dict[str, Any]:
    """``DIR/annotations.json`` parsed and checked (one-line :class:`ArtifactError` otherwise)."""
    root = Path(root)
    ann_path = root / "annotations.json"
    if not root.is_dir():
        raise ArtifactError(root, "dataset folder not found")
    if not ann_path.is_file():
        raise ArtifactError(ann_path, "not found; a patch dataset needs images/ and annotations.json")
    try:
        coco = json.loads(ann_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(ann_path, f"not valid JSON ({exc.__class__.__name__})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise ArtifactError(ann_path, f"not a COCO file: no '{key}' list")
    ids = [c.get("id") for c in coco["categories"]]
    if ids != list(range(1, len(ids) + 1)):
        raise ArtifactError(ann_path, "category ids must be 1..C in taxonomy order")
    return coco


def coco_info(coco: dict[str, Any]) -> CocoInfo:
    info = coco.get("info") or {}
    return CocoInfo(
        class_names=[str(c["name"]) for c in coco["categories"]],
        target_mpp=float(info["target_mpp"]) if info.get("target_mpp") is not None else None,
        patch_size=int(info["patch_size"]) if info.get("patch_size") is not None else None,
    )


def annotated_class_mask(coco: dict[str, Any], class_names: list[str], where: Path) -> torch.Tensor | None:
    """``info.annotated_classes`` as a bool mask over ``class_names``; None when every class is annotated.

    Example:
        >>> annotated_class_mask({"info": {"annotated_classes": ["B"]}}, ["A", "B"], Path("x")).tolist()
        [False, True]
        >>> annotated_class_mask({"info": {}}, ["A", "B"], Path("x")) is None
        True
    """
    names = (coco.get("info") or {}).get("annotated_classes")
    if names is None:
        return None
    unknown = [n for n in names if n not in class_names]
    if unknown or not names:
        raise ArtifactError(where, f"info.annotated_classes {names} must be a non-empty list of its categories")
    mask = torch.tensor([n in names for n in class_names])
    return None if bool(mask.all()) else mask


def check_classes(dataset_names: list[str], taxonomy_names: list[str], where: str | Path) -> None:
    """The dataset's categories must be the taxonomy classes, in the same order."""
    if dataset_names != taxonomy_names:
        raise ArtifactError(
            where, f"categories {dataset_names} do not match the taxonomy classes {taxonomy_names} (order matters)"
        )


def build_augmentation(cfg: AugmentConfig):
    """albumentations pipeline for Pap-stained patches (boxes in pascal_voc pixels follow).

    Orientation is meaningless on a slide, so flips and 90-degree rotations are free; stain
    variation between labs is mimicked by hue/saturation and brightness/contrast jitter; focus
    and scanner compression by blur and JPEG artefacts. ``shift`` moves the patch content so a cell is
    learnt at every position of a tile, not only where the dataset's patch grid put it. ``stain_prob``, ``illuminant_prob`` and
    ``grayscale_prob`` add the larger colour changes of another lab's stain, lamp and camera.
    """
    # albumentations otherwise asks PyPI for a newer version at import: no network at run time
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A  # noqa: PLC0415 (optional for evaluation-only installs)

    ops: list[Any] = []
    if cfg.enabled:
        if cfg.flips:
            ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        if cfg.rotate90:
            ops.append(A.RandomRotate90(p=0.5))
        if cfg.scale > 0:
            ops.append(A.Affine(scale=(1 - cfg.scale, 1 + cfg.scale), keep_ratio=True, border_mode=0, fill=245, p=0.5))
        if cfg.shift > 0:  # uncovered border filled with glass (a mirror would add cells without boxes)
            ops.append(A.Affine(translate_percent=(-cfg.shift, cfg.shift), border_mode=0, fill=245, p=0.5))
        if cfg.hsv_shift > 0:
            hue = int(round(cfg.hsv_shift * 180))
            ops.append(A.HueSaturationValue(hue_shift_limit=hue, sat_shift_limit=2 * hue, val_shift_limit=hue, p=0.5))
        if cfg.stain_prob > 0:
            ops.append(A.HEStain(method="random_preset", p=cfg.stain_prob))
        if cfg.illuminant_prob > 0:
            ops.append(A.PlanckianJitter(temperature_limit=(4000, 10000), p=cfg.illuminant_prob))  # white-balanced lamps
        if cfg.grayscale_prob > 0:
            ops.append(A.ToGray(num_output_channels=3, p=cfg.grayscale_prob))
        if cfg.brightness_contrast > 0:
            ops.append(A.RandomBrightnessContrast(cfg.brightness_contrast, cfg.brightness_contrast, p=0.5))
        if cfg.blur_prob > 0:
            ops.append(A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur_prob))
        if cfg.jpeg_prob > 0:
            ops.append(A.ImageCompression(quality_range=(cfg.jpeg_quality_min, 100), p=cfg.jpeg_prob))
    return A.Compose(ops, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3))


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; OpenCV when installed, else torchvision's decoder (GPU boxes without cv2)."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        from torchvision.io import ImageReadMode, decode_image  # noqa: PLC0415

        try:
            return decode_image(str(path), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
        except (RuntimeError, OSError):
            raise ArtifactError(path, "image missing or unreadable") from None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ArtifactError(path, "image missing or unreadable")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class CocoPatchDataset(Dataset):
    """Images as uint8 ``(H, W, 3)`` tensors, targets ``{boxes (K,4) xyxy, labels (K,) 0-based}``.

    Images stay uint8 until they reach the training device (``Detector.as_float_images``): a quarter of
    the bytes a float image has to cross from the loader's worker processes.

    A dataset whose ``info.annotated_classes`` names only some classes (annotations that mark every
    cell of those classes and nothing of the others) adds ``annotated``, a ``(C,)`` bool tensor, to
    each target; the classification loss then ignores the other classes on its background
    (:func:`~wsi_pipeline.models.heads.gather_classification_targets`).
    """

    def __init__(self, root: str | Path, augment: AugmentConfig | None = None) -> None:
        self.root = Path(root)
        self.coco = read_coco(self.root)
        self.info = coco_info(self.coco)
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        by_image: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in self.coco["annotations"]:
            if ann.get("image_id") in by_image and not ann.get("iscrowd", 0):
                by_image[ann["image_id"]].append(ann)
        self.annotations = [by_image[im["id"]] for im in self.images]
        self.transform = build_augmentation(augment) if augment is not None and augment.enabled else None
        self.annotated = annotated_class_mask(self.coco, self.info.class_names, self.root / "annotations.json")

    def __len__(self) -> int:
        return len(self.images)

    def set_augmentation_seed(self, seed: int) -> None:
        """Make this epoch's augmentations reproducible (the same whether a run resumed or not)."""
        if self.transform is not None:
            self.transform.set_random_seed(seed)

    def image_labels(self, index: int) -> set[int]:
        """0-based class indices present in image ``index`` (for repeat-factor sampling)."""
        return {int(a["category_id"]) - 1 for a in self.annotations[index]}

    def load_image(self, index: int) -> np.ndarray:
        path = self.root / "images" / self.images[index]["file_name"]
        return read_rgb(path)

    def boxes_and_labels(self, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels = [], []
        for ann in self.annotations[index]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                boxes.append([x0, y0, x1, y1])
                labels.append(int(ann["category_id"]) - 1)
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = self.load_image(index)
        boxes, labels = self.boxes_and_labels(index, *image.shape[:2])
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "image_id": torch.tensor(self.images[index]["id"]),
        }
        if self.annotated is not None:
            target["annotated"] = self.annotated
        return tensor, target


class ConcatPatchDataset(ConcatDataset):
    """Several :class:`CocoPatchDataset` trained on as one; they must agree on classes, mpp and patch size.

    Example:
        >>> ds = ConcatPatchDataset([CocoPatchDataset("data/lab"), CocoPatchDataset("data/starter/train")])  # doctest: +SKIP
        >>> len(ds), ds.info.target_mpp  # doctest: +SKIP
        (2479, 0.5)
    """

    def __init__(self, parts: list[CocoPatchDataset]) -> None:
        super().__init__(parts)
        self.parts = parts
        self.info = parts[0].info
        for part in parts[1:]:
            if part.info != self.info:
                raise ArtifactError(part.root / "annotations.json", f"classes, target_mpp or patch_size differ from "
                                                                   f"{parts[0].root / 'annotations.json'}")

    def image_labels(self, index: int) -> set[int]:
        part = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[part - 1] if part else 0
        return self.parts[part].image_labels(index - start)

    def set_augmentation_seed(self, seed: int) -> None:
        for part in self.parts:
            part.set_augmentation_seed(seed)


def collate(batch: list) -> tuple[torch.Tensor | list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One uint8 ``(B, H, W, 3)`` tensor when the images share a size (one transfer), else a list."""
    images, targets = zip(*batch)
    if all(img.shape == images[0].shape for img in images):
        return torch.stack(images), list(targets)
    return list(images), list(targets)


def repeat_factors(image_labels: list[set[int]], threshold: float) -> np.ndarray:
    """LVIS repeat factors: ``r_c = max(1, sqrt(t / f_c))`` per class, ``r_i = max_c r_c`` per image.

    ``f_c`` is the fraction of images that contain class ``c``; images without boxes get 1.

    Example:
        >>> repeat_factors([{0}, {0}, {0}, {0, 1}], threshold=0.5).round(3).tolist()
        [1.0, 1.0, 1.0, 1.414]
    """
    n = max(1, len(image_labels))
    counts: dict[int, int] = {}
    for labels in image_labels:
        for c in labels:
            counts[c] = counts.get(c, 0) + 1
    class_factor = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
    return np.array([max([class_factor[c] for c in labels], default=1.0) for labels in image_labels], np.float64)


class RepeatFactorSampler(Sampler[int]):
    """Each epoch, image ``i`` appears ``floor(r_i)`` times plus once more with probability ``frac(r_i)``."""

    def __init__(self, factors: np.ndarray, seed: int = 0) -> None:
        self.factors = np.asarray(factors, np.float64)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        whole = np.floor(self.factors)
        repeats = whole + (rng.random(len(self.factors)) < self.factors - whole)
        order = np.repeat(np.arange(len(self.factors)), repeats.astype(np.int64))
        return rng.permutation(order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(round(self.factors.sum()))
