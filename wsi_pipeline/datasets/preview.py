"""A one-file HTML contact sheet of a patch set, boxes drawn, to check a training set before training on it.

The commonest fault of an imported annotation set is geometric: the wrong pixel size, an offset, boxes of
another slide. Boxes that miss their cells train a detector on background. ``wsi data preview DIR`` draws
every stored box in its class colour on a sample of patches, with the class counts, so a person sees at a
glance whether the boxes lie on the cells. Hard-negative sets show the call each patch was cut for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError, ConfigError
from ..fsutil import atomic_write
from ..taxonomy import load_taxonomy


@dataclass
class PreviewSummary:
    path: Path
    n_shown: int
    n_candidates: int  # patches matching the class filter (all patches without one)
    n_total: int


def render_preview(root: str | Path, out: str | Path | None = None, max_images: int = 200,
                   class_name: str | None = None, thumb: int = 192) -> PreviewSummary:
    """Write ``out`` (default ``root/preview.html``): up to ``max_images`` patches of the set in ``root``,
    evenly spaced over the set (or over the patches holding ``class_name``), boxes drawn.

    Example:
        >>> s = render_preview("data/lab")  # doctest: +SKIP
        >>> s.path, s.n_shown  # doctest: +SKIP
        (PosixPath('data/lab/preview.html'), 200)
    """
    from ..export.html import render_dataset_preview  # noqa: PLC0415
    from ..export.images import data_uri, encode_image  # noqa: PLC0415
    from ..models.data import read_coco  # noqa: PLC0415

    if max_images < 1:
        raise ConfigError(None, f"max_images must be >= 1, got {max_images}")
    root = Path(root)
    coco = read_coco(root)
    names = [str(c["name"]) for c in coco["categories"]]
    if class_name is not None and class_name not in names:
        raise ConfigError(None, f"class {class_name!r} is not in the set's categories ({', '.join(names)})")
    colours = {c.name: c.rgb for c in load_taxonomy().classes}
    info = coco.get("info") or {}
    boxes: dict[int, list[tuple[list[float], str]]] = {}
    for ann in coco["annotations"]:
        boxes.setdefault(ann["image_id"], []).append((ann["bbox"], names[ann["category_id"] - 1]))
    images = sorted(coco["images"], key=lambda im: im["id"])
    if class_name is not None:
        images = [im for im in images if any(c == class_name for _, c in boxes.get(im["id"], []))]
    picks = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int)) if images else []
    images_dir = root / info.get("images_dir", "images")
    items = []
    for i in picks:
        im = images[i]
        bgr = cv2.imread(str(images_dir / im["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ArtifactError(images_dir / im["file_name"], "patch image missing or unreadable")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        width = max(1, round(max(rgb.shape[:2]) / 256))
        for (x, y, w, h), cls in boxes.get(im["id"], []):
            cv2.rectangle(rgb, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                          colours.get(cls, (255, 255, 255)), width)
        counts = Counter(c for _, c in boxes.get(im["id"], []))
        caption = ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "no box"
        if "negative_for" in im:
            caption += f"; cut for its {im['negative_for']} call, score {im.get('score', '?')}"
        items.append({"file_name": im["file_name"], "caption": caption,
                      "uri": data_uri("image/jpeg", encode_image(rgb, "jpeg", 85))})
    totals = Counter(names[a["category_id"] - 1] for a in coco["annotations"])
    html = render_dataset_preview(
        title=f"Patch set {root.name}", description=str(info.get("description", "patch set")),
        n_total=len(coco["images"]), n_candidates=len(images), items=items, thumb=thumb,
        target_mpp=info.get("target_mpp"), patch_size=info.get("patch_size"), class_filter=class_name,
        annotated_classes=info.get("annotated_classes") or [],
        class_rows=[(n, "#%02X%02X%02X" % colours.get(n, (255, 255, 255)), totals.get(n, 0)) for n in names])
    path = Path(out) if out is not None else root / "preview.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html)
    return PreviewSummary(path, len(items), len(images), len(coco["images"]))
