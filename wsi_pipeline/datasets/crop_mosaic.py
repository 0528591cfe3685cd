"""Labelled cell crops laid out as training patches ("crop mosaics"), for the classes fields lack.

A crop collection (like CRIC's nucleus-centred cell crops) holds far more rare-class cells than the
fields a lab has annotated. :func:`build_crop_mosaics` resamples crops to the model's resolution and
lays ``grid x grid`` of them on a white patch; every labelled nucleus inside a crop gets a box of
``point_box_um`` around it (the crop's own cell, and the other indexed cells of the same field that
fall in the crop's window), the same rule as point annotations, clipped to its crop's square. Classes are drawn with weights
proportional to the square root of their crop counts, so rare classes appear more often than in the
collection without repeating the few SCC crops endlessly. The index is a CSV::

    file,cell_id,image,label,nucleus_x,nucleus_y
    SCC/1234.jpg,1234,<field id>,SCC,402,377

(``file`` relative to the index's folder; ``image`` the field; ``nucleus_x/y`` in the field's pixels,
at the crops' geometry). With a split file only the crops of one side's fields are used.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError, ConfigError
from ..fsutil import atomic_write
from ..progress import progress_bar
from ..resolution import DEFAULT_TARGET_MPP
from ..taxonomy import load_taxonomy
from .annotations import Annotation, categories, class_mapper
from .config import label_aliases
from .layout import coco_box, start_patch_set, write_patch
from .slides import patch_boxes
from .split import FieldSplit

log = logging.getLogger(__name__)

DESCRIPTION = "wsi_pipeline crop mosaics: labelled cell crops laid out as patches"
MIN_VISIBLE = 0.4  # share of a nucleus box that must lie in its crop's square to be kept


@dataclass(frozen=True)
class IndexedCrop:
    path: Path
    field: str
    class_name: str
    x: float  # nucleus in the field's pixels
    y: float


@dataclass
class MosaicSetSummary:
    out_dir: Path
    annotations_path: Path
    n_images: int
    class_counts: dict[str, int]
    crops_used: dict[str, int]

    def table(self) -> str:
        lines = [f"{'class':<8} {'boxes':>6} {'crops':>6}"]
        lines += [f"{k:<8} {v:>6} {self.crops_used.get(k, 0):>6}" for k, v in self.class_counts.items() if v]
        return "\n".join(lines)


def read_crop_index(index_csv: str | Path, split: FieldSplit | None = None, side: str = "train") -> list[IndexedCrop]:
    """The crops of an index CSV (module docstring), those of ``side``'s fields when ``split`` is given."""

    index_csv = Path(index_csv)
    taxonomy = load_taxonomy()
    to_class = class_mapper(taxonomy, label_aliases(taxonomy))
    try:
        with open(index_csv, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ArtifactError(index_csv, "crop index not found") from None
    needed = ("file", "image", "label", "nucleus_x", "nucleus_y")
    if not rows or any(c not in rows[0] for c in needed):
        raise ArtifactError(index_csv, f"a crop index needs the columns {', '.join(needed)}")
    crops = []
    for i, r in enumerate(rows, start=2):
        name = to_class(r["label"])
        if name is None:
            raise ArtifactError(index_csv, f"line {i}: label {r['label']!r} is not a taxonomy class or alias")
        if split is not None and split.side(r["image"]) != side:
            continue
        crops.append(IndexedCrop(index_csv.parent / r["file"], r["image"], name, float(r["nucleus_x"]), float(r["nucleus_y"])))
    if not crops:
        raise ArtifactError(index_csv, f"no crops{f' on the {side} side of the split' if split else ''}")
    return crops


def build_crop_mosaics(
    crops: list[IndexedCrop],
    out_dir: str | Path,
    crops_mpp: float,
    n_images: int = 250,
    grid: int = 4,
    target_mpp: float = DEFAULT_TARGET_MPP,
    patch_size: int = 256,
    point_box_um: float = 20.0,
    annotated_classes: list[str] | None = None,
    seed: int = 0,
    jpeg_quality: int = 92,
    progress: bool = True,
) -> MosaicSetSummary:
    """Write ``n_images`` crop mosaics of ``grid x grid`` crops as a COCO patch set (module docstring).

    Example:
        >>> crops = read_crop_index("../shared/data/cytology/cric_cells/index.csv")  # doctest: +SKIP
        >>> s = build_crop_mosaics(crops, "data/cric_cell_mosaics", crops_mpp=0.30)  # doctest: +SKIP
        >>> print(s.table())  # doctest: +SKIP
    """
    taxonomy = load_taxonomy()
    if n_images < 1 or grid < 1:
        raise ConfigError(None, f"need at least one image and a grid of 1 or more, got {n_images} and {grid}")
    scale = target_mpp / crops_mpp  # crop px per patch px
    first = cv2.imread(str(crops[0].path))
    if first is None:
        raise ArtifactError(crops[0].path, "crop image unreadable")
    crop_px = first.shape[0]
    cell = int(round(crop_px / scale))
    if grid * cell > patch_size:
        raise ConfigError(None, f"{grid}x{grid} crops of {cell} px do not fit a {patch_size} px patch")
    margin = (patch_size - grid * cell) // 2
    half_box = point_box_um / target_mpp / 2
    by_field: dict[str, list[IndexedCrop]] = {}
    for c in crops:
        by_field.setdefault(c.field, []).append(c)
    by_class: dict[str, list[IndexedCrop]] = {}
    for c in crops:
        by_class.setdefault(c.class_name, []).append(c)
    classes = sorted(by_class, key=taxonomy.index)
    weights = np.sqrt([len(by_class[k]) for k in classes])
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    images_dir, marker = start_patch_set(out, DESCRIPTION)
    images, anns_out = [], []
    used: dict[str, set[Path]] = {k: set() for k in classes}
    for image_id in progress_bar(range(1, n_images + 1), desc="crop mosaics", unit="patch", disable=not progress):
        patch = np.full((patch_size, patch_size, 3), 255, np.uint8)
        boxes: list[Annotation] = []
        for slot in range(grid * grid):
            name = classes[rng.choice(len(classes), p=weights)]
            crop = by_class[name][rng.integers(len(by_class[name]))]
            bgr = cv2.imread(str(crop.path))
            if bgr is None:
                raise ArtifactError(crop.path, "crop image unreadable")
            used[name].add(crop.path)
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            rgb = cv2.resize(bgr[:, :, ::-1], (cell, cell), interpolation=cv2.INTER_AREA)
            r, c = divmod(slot, grid)
            ox, oy = margin + c * cell, margin + r * cell
            patch[oy : oy + cell, ox : ox + cell] = _turn(rgb, turns, flip)
            half = crop_px / 2
            for other in by_field[crop.field]:  # every indexed nucleus in this crop's window
                dx, dy = other.x - crop.x, other.y - crop.y
                if abs(dx) < half and abs(dy) < half:
                    px, py = _turn_point((half + dx) / scale, (half + dy) / scale, cell, turns, flip)
                    # clipped to this crop's square: what lies beyond it is another crop's pixels
                    x0, y0 = max(px - half_box, 0.0), max(py - half_box, 0.0)
                    x1, y1 = min(px + half_box, cell), min(py + half_box, cell)
                    if (x1 - x0) * (y1 - y0) >= MIN_VISIBLE * (2 * half_box) ** 2:
                        boxes.append(Annotation((ox + x0, oy + y0, ox + x1, oy + y1), other.class_name))
        name = f"mosaic_{image_id:05d}.jpg"
        write_patch(images_dir, name, patch, jpeg_quality)
        images.append({"id": image_id, "file_name": name, "width": patch_size, "height": patch_size,
                       "slide": "crop_mosaic", "x": 0, "y": 0, "level0_size": patch_size, "rare": True})
        for box, cls in patch_boxes(boxes, 0, 0, patch_size, 1.0, MIN_VISIBLE, 6):
            anns_out.append(coco_box(len(anns_out) + 1, image_id, taxonomy.index(cls) + 1, box))
    counts = dict.fromkeys(taxonomy.names, 0)
    for a in anns_out:
        counts[taxonomy.names[a["category_id"] - 1]] += 1
    coco = {
        "info": {"description": DESCRIPTION, "target_mpp": target_mpp, "patch_size": patch_size,
                 "taxonomy": taxonomy.names, "images_dir": "images", "crops_mpp": crops_mpp, "grid": grid,
                 "point_box_um": point_box_um, "seed": seed, "complete": True,
                 **({"annotated_classes": annotated_classes} if annotated_classes else {})},
        "images": images, "annotations": anns_out, "categories": categories(taxonomy),
    }
    atomic_write(marker, json.dumps(coco) + "\n")
    log.info("Crop mosaics %s: %d patches, %d boxes", out, len(images), len(anns_out))
    return MosaicSetSummary(out, marker, len(images), counts, {k: len(v) for k, v in used.items()})


def _turn(rgb: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    out = np.rot90(rgb, turns)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def _turn_point(x: float, y: float, size: int, turns: int, flip: bool) -> tuple[float, float]:
    """Where ``(x, y)`` of a ``size`` square lands after :func:`_turn` (np.rot90 turns counter-clockwise)."""
    for _ in range(turns):
        x, y = y, size - x
    return (size - x, y) if flip else (x, y)
