"""Ground truth beside a synthetic slide: QuPath GeoJSON, COCO JSON, slide-level truth.
Reading annotations back (any source) is :mod:`wsi_pipeline.datasets.annotations`.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from ..datasets.annotations import Annotation, categories
from ..fsutil import atomic_write
from ..io.qupath import QuPathObject, feature_collection
from ..taxonomy import Taxonomy

log = logging.getLogger(__name__)


def _write_json(path: Path, data: dict) -> Path:
    return atomic_write(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_geojson(path: Path, annotations: list[Annotation], taxonomy: Taxonomy, object_type: str = "annotation") -> Path:
    """QuPath-importable FeatureCollection: one rectangle Feature per cell, classification name + colour."""
    objects = (QuPathObject(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path.name}/{i}")), a.box, a.class_name,
                            taxonomy[a.class_name].rgb) for i, a in enumerate(annotations))
    return _write_json(path, feature_collection(objects, object_type=object_type, locked=False))


def write_coco(path: Path, annotations: list[Annotation], taxonomy: Taxonomy, image: dict) -> Path:
    """COCO detection JSON for one whole slide image (``image``: file_name, width, height)."""
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": taxonomy.index(a.class_name) + 1,
         "bbox": [a.box[0], a.box[1], a.box[2] - a.box[0], a.box[3] - a.box[1]],
         "area": (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]), "iscrowd": 0}
        for i, a in enumerate(annotations)
    ]
    return _write_json(path, {
        "info": {"description": "wsi_pipeline synthetic slide ground truth", "taxonomy": taxonomy.names},
        "images": [{"id": 1, **image}],
        "annotations": anns,
        "categories": categories(taxonomy),
    })


def most_severe(counts: dict[str, int], taxonomy: Taxonomy) -> str:
    """The most severe abnormal class present, else ``NILM`` (organisms do not raise the category).

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> most_severe({"NILM": 100, "LSIL": 2, "HSIL": 1, "CAND": 3}, load_taxonomy())
        'HSIL'
    """
    present = [c for c in taxonomy.classes if c.abnormal and counts.get(c.name, 0) > 0]
    return max(present, key=lambda c: c.severity).name if present else taxonomy.names[0]


