"""The COCO patch-set folder every `wsi data` writer fills: ``images/`` and ``annotations.json``, the
last written and the mark of a complete set (docs/training.md, "Dataset layout")."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError


def start_patch_set(out_dir: str | Path, description: str) -> tuple[Path, Path]:
    """``(images folder, annotations.json path)`` of a set about to be (re)written in ``out_dir``.

    A rerun into a set of the same ``description`` starts it afresh: the completion marker goes first, so
    an interrupted rerun never looks complete, then the old patches and their preview. A folder holding another kind of set
    (a lab's `wsi data build` set given as the output of `wsi data negatives`, say) is refused, so that
    one wrong ``--out`` cannot delete it.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "negatives"
        >>> images, marker = start_patch_set(out, "wsi_pipeline hard negatives")
        >>> images.is_dir(), marker.exists()
        (True, False)
    """
    out = Path(out_dir)
    marker = out / "annotations.json"
    if marker.is_file():
        try:
            found = json.loads(marker.read_text()).get("info", {}).get("description", "")
        except (OSError, json.JSONDecodeError, AttributeError):
            found = "unreadable annotations.json"
        if found != description:
            raise ArtifactError(out, f"holds another dataset ({found or 'no description'}); "
                                     "choose another output folder or delete this one")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    (out / "preview.html").unlink(missing_ok=True)  # `wsi data preview` of the old set
    for old in list(images.glob("*.jpg")) + list(images.glob("*.png")):
        old.unlink()
    return images, marker


def write_patch(images_dir: Path, name: str, rgb: np.ndarray, jpeg_quality: int) -> None:
    """``images_dir/name``, an RGB uint8 patch as JPEG; a one-line :class:`ArtifactError` if it cannot be written."""
    if not cv2.imwrite(str(images_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
        raise ArtifactError(images_dir / name, "could not write patch image")


def coco_box(annotation_id: int, image_id: int, category_id: int, box: tuple[float, float, float, float]) -> dict:
    """The COCO annotation of an ``(x0, y0, x1, y1)`` patch-pixel box, as every patch-set writer stores it.

    Example:
        >>> coco_box(1, 2, 7, (10.0, 20.0, 30.5, 40.0))["bbox"]
        [10.0, 20.0, 20.5, 20.0]
    """
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id,
            "bbox": [box[0], box[1], round(box[2] - box[0], 2), round(box[3] - box[1], 2)],
            "area": round((box[2] - box[0]) * (box[3] - box[1]), 2), "iscrowd": 0}
