"""Ground truth beside a slide (QuPath GeoJSON, COCO JSON, slide-level truth) and annotation reading.

Reading accepts what a user brings: a QuPath GeoJSON export (``properties.classification.name``), a
GeoJSON with ``properties.label``/``name`` (e.g. CRIC's Bethesda strings), or COCO JSON. Labels map to
taxonomy classes by name or through ``label_aliases`` in ``configs/synth.yaml``; other labels are
skipped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import shapely.geometry

from ..errors import ArtifactError
from ..fsutil import atomic_write
from ..io.qupath import QuPathObject, feature_collection
from ..taxonomy import Taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotation:
    """A labelled box in level-0 pixels, ``(x0, y0, x1, y1)``."""

    box: tuple[float, float, float, float]
    class_name: str


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


def categories(taxonomy: Taxonomy) -> list[dict]:
    return [{"id": i + 1, "name": c.name, "supercategory": c.group} for i, c in enumerate(taxonomy.classes)]


def most_severe(counts: dict[str, int], taxonomy: Taxonomy) -> str:
    """The most severe abnormal class present, else ``NILM`` (organisms do not raise the category).

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> most_severe({"NILM": 100, "LSIL": 2, "HSIL": 1, "CAND": 3}, load_taxonomy())
        'HSIL'
    """
    present = [c for c in taxonomy.classes if c.abnormal and counts.get(c.name, 0) > 0]
    return max(present, key=lambda c: c.severity).name if present else taxonomy.names[0]


def class_mapper(taxonomy: Taxonomy, aliases: dict[str, str]):
    """Function mapping an annotation label to a taxonomy class name (or None)."""
    table = {n.lower(): n for n in taxonomy.names}
    table.update({c.label.lower(): c.name for c in taxonomy.classes})
    table.update({k.lower(): v for k, v in aliases.items()})
    return lambda label: table.get(str(label).strip().lower()) if label is not None else None


def load_annotations(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str]) -> list[Annotation]:
    """Boxes and classes from a GeoJSON (QuPath or plain) or COCO JSON file, in level-0 pixels.

    Example:
        >>> anns = load_annotations("../shared/data/cytology/cric/7c09a4a52e0cb6ffc6a10044dd321123.geojson",
        ...                         load_taxonomy(), {"negative for intraepithelial lesion": "NILM"})  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(path, "annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(path, "not valid JSON (expected GeoJSON or COCO)") from None
    to_class = class_mapper(taxonomy, aliases)
    skipped: Counter[str] = Counter()
    out: list[Annotation] = []
    if isinstance(data, dict) and "annotations" in data and "categories" in data:
        names = {c["id"]: c["name"] for c in data["categories"]}
        for a in data["annotations"]:
            name = to_class(names.get(a.get("category_id")))
            x, y, w, h = a["bbox"]
            if name is None:
                skipped[str(names.get(a.get("category_id")))] += 1
            else:
                out.append(Annotation((x, y, x + w, y + h), name))
    else:
        features = data.get("features") if isinstance(data, dict) else data
        if not isinstance(features, list):
            raise ArtifactError(path, "no GeoJSON features and no COCO annotations found")
        for f in features:
            props = f.get("properties") or {}
            cls = props.get("classification") or {}
            label = cls.get("name") if isinstance(cls, dict) else cls
            label = label or props.get("label") or props.get("name") or props.get("class")
            name = to_class(label)
            if name is None:
                skipped[str(label)] += 1
                continue
            try:
                bounds = shapely.geometry.shape(f["geometry"]).bounds
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ArtifactError(path, f"feature {len(out) + sum(skipped.values())} has no valid geometry") from None
            out.append(Annotation(tuple(float(v) for v in bounds), name))
    if skipped:
        log.warning("%s: skipped %d annotations with labels not in the taxonomy: %s", path.name,
                    sum(skipped.values()), ", ".join(f"{k} ({v})" for k, v in skipped.most_common()))
    return out
