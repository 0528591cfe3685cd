"""Ground truth beside a synthetic slide: QuPath GeoJSON, COCO JSON, slide-level truth.
Reading annotations back (any source) is :mod:`wsi_pipeline.datasets.annotations`.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from ..datasets.annotations import Annotation, categories
from ..taxonomy import Taxonomy

log = logging.getLogger(__name__)


def _write_json(path: Path, data: dict) -> Path:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def write_geojson(path: Path, annotations: list[Annotation], taxonomy: Taxonomy, object_type: str = "annotation") -> Path:
    """QuPath-importable FeatureCollection: one rectangle Feature per cell, classification name + colour."""
    features = []
    for i, a in enumerate(annotations):
        x0, y0, x1, y1 = a.box
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path.name}/{i}")),
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {
                "objectType": object_type,
                "classification": {"name": a.class_name, "color": list(taxonomy[a.class_name].rgb)},
                "isLocked": False,
            },
        })
    return _write_json(path, {"type": "FeatureCollection", "features": features})


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


