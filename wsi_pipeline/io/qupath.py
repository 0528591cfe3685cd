"""QuPath GeoJSON: the one writer of rectangle objects QuPath imports (File > Import objects).

Used for the report's detections (``cells.geojson``) and for synthetic ground truth
(``<slide>.cells.geojson``). Coordinates are level-0 pixels of the slide.

Example:
    >>> fc = feature_collection([QuPathObject("cell-1", (0, 0, 10, 20), "HSIL", (244, 67, 54), {"score": 0.9})],
    ...                         object_type="detection", locked=True)
    >>> f = fc["features"][0]
    >>> f["geometry"]["coordinates"][0][2], f["properties"]["classification"], f["properties"]["measurements"]
    ([10, 20], {'name': 'HSIL', 'color': [244, 67, 54]}, {'score': 0.9})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QuPathObject:
    """One rectangle: id, level-0 box ``(x0, y0, x1, y1)``, class name and RGB colour, optional measurements."""

    id: str
    box: tuple[float, float, float, float]
    class_name: str
    rgb: tuple[int, int, int]
    measurements: dict[str, float] | None = None


def feature_collection(objects: Iterable[QuPathObject], object_type: str, locked: bool) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of rectangle Polygons with QuPath's ``objectType`` and ``classification``."""
    features = []
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        properties: dict[str, Any] = {
            "objectType": object_type,
            "classification": {"name": obj.class_name, "color": list(obj.rgb)},
            "isLocked": locked,
        }
        if obj.measurements is not None:
            properties["measurements"] = dict(obj.measurements)
        features.append({
            "type": "Feature",
            "id": obj.id,
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": properties,
        })
    return {"type": "FeatureCollection", "features": features}
