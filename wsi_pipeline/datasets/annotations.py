"""Annotation importers: boxes and classes from what a lab brings, in level-0 pixels.

* QuPath GeoJSON (``properties.classification.name``) or any GeoJSON with ``properties.label`` /
  ``name`` / ``class`` (e.g. CRIC's Bethesda strings) - also what ``wsi report`` exports as cells.geojson;
* ASAP XML (``<Annotation PartOfGroup=...><Coordinates>``) - also ``wsi report``'s cells.xml, so
  corrected exports can be read back;
* COCO JSON (``annotations`` + ``categories``).

Labels map to taxonomy classes by name, label, or ``label_aliases`` (``configs/synth.yaml``); other
labels are skipped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import shapely.geometry

from ..errors import ArtifactError
from ..taxonomy import Taxonomy, load_taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotation:
    """A labelled box in level-0 pixels, ``(x0, y0, x1, y1)``."""

    box: tuple[float, float, float, float]
    class_name: str


def categories(taxonomy: Taxonomy) -> list[dict]:
    return [{"id": i + 1, "name": c.name, "supercategory": c.group} for i, c in enumerate(taxonomy.classes)]


def class_mapper(taxonomy: Taxonomy, aliases: dict[str, str]):
    """Function mapping an annotation label to a taxonomy class name (or None)."""
    table = {n.lower(): n for n in taxonomy.names}
    table.update({c.label.lower(): c.name for c in taxonomy.classes})
    table.update({k.lower(): v for k, v in aliases.items()})
    return lambda label: table.get(str(label).strip().lower()) if label is not None else None


def load_annotations(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str],
                     any_label: bool = False) -> list[Annotation]:
    """Boxes and classes from a GeoJSON (QuPath or plain) or COCO JSON file, in level-0 pixels.

    A label that is not a taxonomy class (or an alias) is skipped with a warning, unless ``any_label``
    keeps it as it is (``class_name`` is then the raw label, "" when there is none).

    Example:
        >>> anns = load_annotations("../shared/data/cytology/cric/7c09a4a52e0cb6ffc6a10044dd321123.geojson",
        ...                         load_taxonomy(), {"negative for intraepithelial lesion": "NILM"})  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return load_asap_xml(path, taxonomy, aliases, any_label)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(path, "annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(path, "not valid JSON (expected GeoJSON or COCO)") from None
    to_class = _label_mapper(taxonomy, aliases, any_label)
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
    _log_skipped(path, skipped)
    return out


def load_asap_xml(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str],
                  any_label: bool = False) -> list[Annotation]:
    """Boxes from an ASAP XML file: each ``Annotation``'s coordinates' bounds, its class from ``PartOfGroup``.

    Example:
        >>> import tempfile, os
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> xml = ('<ASAP_Annotations><Annotations><Annotation Name="c1" Type="Rectangle" PartOfGroup="HSIL">'
        ...        '<Coordinates><Coordinate Order="0" X="10" Y="20"/><Coordinate Order="1" X="50" Y="20"/>'
        ...        '<Coordinate Order="2" X="50" Y="60"/><Coordinate Order="3" X="10" Y="60"/></Coordinates>'
        ...        '</Annotation></Annotations></ASAP_Annotations>')
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "cells.xml"); _ = open(p, "w").write(xml)
        ...     load_asap_xml(p, load_taxonomy(), {})
        [Annotation(box=(10.0, 20.0, 50.0, 60.0), class_name='HSIL')]
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ArtifactError(path, "annotation file not found") from None
    except ET.ParseError as exc:
        raise ArtifactError(path, f"not valid XML ({exc})") from None
    to_class = _label_mapper(taxonomy, aliases, any_label)
    skipped: Counter[str] = Counter()
    out: list[Annotation] = []
    for i, ann in enumerate(root.iter("Annotation")):
        label = ann.get("PartOfGroup") or ann.get("Name")
        name = to_class(label)
        if name is None:
            skipped[str(label)] += 1
            continue
        try:
            xy = [(float(c.get("X")), float(c.get("Y"))) for c in ann.iter("Coordinate")]
        except (TypeError, ValueError):
            raise ArtifactError(path, f"annotation {i} has a coordinate without numeric X/Y") from None
        if not xy:
            raise ArtifactError(path, f"annotation {i} has no coordinates")
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        out.append(Annotation((min(xs), min(ys), max(xs), max(ys)), name))
    if not out and not skipped:
        raise ArtifactError(path, "no ASAP annotations found")
    _log_skipped(path, skipped)
    return out


def _label_mapper(taxonomy: Taxonomy, aliases: dict[str, str], any_label: bool):
    to_class = class_mapper(taxonomy, aliases)
    return (lambda label: to_class(label) or str(label or "")) if any_label else to_class


def load_regions(path: str | Path) -> list[tuple[float, float, float, float]]:
    """Bounding boxes of every annotation in a GeoJSON, COCO or ASAP XML file, whatever its label:
    for example the circles a reader drew around abnormal cells.

    Example:
        >>> import json, tempfile, os
        >>> circle = {"type": "Feature", "properties": {},
        ...           "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [30, 10], [30, 40], [10, 40], [10, 10]]]}}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "circles.geojson"); _ = open(p, "w").write(json.dumps([circle]))
        ...     load_regions(p)
        [(10.0, 10.0, 30.0, 40.0)]
    """
    return [a.box for a in load_annotations(path, load_taxonomy(), {}, any_label=True)]


def _log_skipped(path: Path, skipped: Counter) -> None:
    if skipped:
        log.warning("%s: skipped %d annotations with labels not in the taxonomy: %s", path.name,
                    sum(skipped.values()), ", ".join(f"{k} ({v})" for k, v in skipped.most_common()))
