"""Annotation importers: boxes and classes from what a lab brings, in level-0 pixels.

* QuPath GeoJSON (``properties.classification.name``) or any GeoJSON with ``properties.label`` /
  ``name`` / ``class`` (e.g. CRIC's Bethesda strings) - also what ``wsi report`` exports as cells.geojson;
* ASAP XML (``<Annotation PartOfGroup=...><Coordinates>``) - also ``wsi report``'s cells.xml, so
  corrected exports can be read back;
* COCO JSON (``annotations`` + ``categories``);
* point CSV (``image, x, y, label`` per row; ``class`` or ``name`` also name the label): one file for
  many images, each image reading its own rows.

Points (QuPath point annotations, CRIC's nucleus points, CSV rows) load as zero-size boxes; training
turns each into a square of ``point_box_um`` micrometres centred on the point (:func:`expand_points`),
the one rule used at training, evaluation (a hit is a detection holding the point) and in
docs/training.md.

Labels map to taxonomy classes by name, label, or ``label_aliases`` (``configs/synth.yaml``); other
labels are skipped and counted in the log, or refused in one line with ``strict``.
"""

from __future__ import annotations

import csv
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

    @property
    def is_point(self) -> bool:
        return self.box[0] == self.box[2] and self.box[1] == self.box[3]


POINT_LABEL_COLUMNS = ("label", "class", "name")


def field_id(name: str | Path) -> str:
    """The key of an image (field or slide) in point CSVs, crop indexes and split files: its file name
    without folders or extension.

    Example:
        >>> field_id("cric_fields/008df697b9283d9ad4774096584d2efb.jpg")
        '008df697b9283d9ad4774096584d2efb'
    """
    return Path(str(name)).name.split(".")[0]


def expand_points(annotations: list[Annotation], mpp: float, point_box_um: float) -> list[Annotation]:
    """Every point as a square of ``point_box_um`` micrometres centred on it (boxes stay as they are).

    Example:
        >>> expand_points([Annotation((100.0, 50.0, 100.0, 50.0), "HSIL")], mpp=0.25, point_box_um=20.0)
        [Annotation(box=(60.0, 10.0, 140.0, 90.0), class_name='HSIL')]
    """
    half = point_box_um / mpp / 2.0
    return [Annotation((a.box[0] - half, a.box[1] - half, a.box[2] + half, a.box[3] + half), a.class_name)
            if a.is_point else a for a in annotations]


def categories(taxonomy: Taxonomy) -> list[dict]:
    return [{"id": i + 1, "name": c.name, "supercategory": c.group} for i, c in enumerate(taxonomy.classes)]


def class_mapper(taxonomy: Taxonomy, aliases: dict[str, str]):
    """Function mapping an annotation label to a taxonomy class name (or None)."""
    table = {n.lower(): n for n in taxonomy.names}
    table.update({c.label.lower(): c.name for c in taxonomy.classes})
    table.update({k.lower(): v for k, v in aliases.items()})
    return lambda label: table.get(str(label).strip().lower()) if label is not None else None


def load_annotations(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str],
                     any_label: bool = False, image: str | Path | None = None,
                     strict: bool = False) -> list[Annotation]:
    """Boxes (points as zero-size boxes) and classes from a GeoJSON (QuPath or plain), COCO JSON, ASAP
    XML or point CSV file, in level-0 pixels.

    A label that is not a taxonomy class (or an alias) is skipped with a warning, unless ``any_label``
    keeps it as it is (``class_name`` is then the raw label, "" when there is none) or ``strict``
    refuses the file in one line. A CSV holds points of many images: ``image`` picks its rows (by
    file stem); a CSV with no row for it is an error.

    Example:
        >>> anns = load_annotations("../shared/data/cytology/cric/7c09a4a52e0cb6ffc6a10044dd321123.geojson",
        ...                         load_taxonomy(), {"negative for intraepithelial lesion": "NILM"})  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return load_asap_xml(path, taxonomy, aliases, any_label, strict)
    if path.suffix.lower() == ".csv":
        return load_point_csv(path, taxonomy, aliases, image, strict)
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
    _log_skipped(path, skipped, strict)
    return out


def read_point_rows(path: str | Path) -> dict[str, list[dict[str, str]]]:
    """The rows of a point CSV grouped by image stem; a one-line error when a column is missing.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "cells.csv")
        ...     _ = open(p, "w").write("image,x,y,label\\na.jpg,10,20,HSIL\\na.jpg,30,5,NILM\\nb.jpg,1,2,LSIL\\n")
        ...     {k: len(v) for k, v in read_point_rows(p).items()}
        {'a': 2, 'b': 1}
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [h.strip().lower() for h in reader.fieldnames or []]
    except FileNotFoundError:
        raise ArtifactError(path, "annotation file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ArtifactError(path, f"not a readable CSV ({exc})") from None
    missing = [c for c in ("image", "x", "y") if c not in header]
    if not rows or missing or not any(c in header for c in POINT_LABEL_COLUMNS):
        raise ArtifactError(path, "a point CSV needs the columns image, x, y and label (or class/name)"
                            + (f"; missing {', '.join(missing)}" if rows and missing else ""))
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        row = {k.strip().lower(): v for k, v in row.items() if k}
        grouped.setdefault(field_id(row["image"]), []).append(row)
    return grouped


def load_point_csv(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str], image: str | Path | None = None,
                   strict: bool = False) -> list[Annotation]:
    """Points of one image (``image``; every row when None) from a point CSV, as zero-size boxes.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "cells.csv")
        ...     _ = open(p, "w").write("image,x,y,label\\nf1.jpg,10,20,HSIL\\nf2.jpg,3,4,LSIL\\n")
        ...     load_point_csv(p, load_taxonomy(), {}, image="f1.jpg")
        [Annotation(box=(10.0, 20.0, 10.0, 20.0), class_name='HSIL')]
    """
    path = Path(path)
    grouped = read_point_rows(path)
    if image is None:
        rows = [r for group in grouped.values() for r in group]
    elif field_id(image) in grouped:
        rows = grouped[field_id(image)]
    else:
        raise ArtifactError(path, f"no points for image {Path(image).name}")
    to_class = class_mapper(taxonomy, aliases)
    skipped: Counter[str] = Counter()
    out: list[Annotation] = []
    for i, row in enumerate(rows):
        label = next((row[c] for c in POINT_LABEL_COLUMNS if row.get(c)), "")
        name = to_class(label)
        if name is None:
            skipped[label] += 1
            continue
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            raise ArtifactError(path, f"row {i + 1} of {row['image']} has a non-numeric x or y") from None
        out.append(Annotation((x, y, x, y), name))
    _log_skipped(path, skipped, strict)
    return out


def load_asap_xml(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str],
                  any_label: bool = False, strict: bool = False) -> list[Annotation]:
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
    _log_skipped(path, skipped, strict)
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


def _log_skipped(path: Path, skipped: Counter, strict: bool = False) -> None:
    if skipped and strict:
        label, n = skipped.most_common(1)[0]
        raise ArtifactError(path, f"label {label!r} ({n} annotations) is not a taxonomy class or alias; "
                                  "add it to label_aliases (configs/synth.yaml) or pass --skip-unknown-labels")
    if skipped:
        log.warning("%s: skipped %d annotations with labels not in the taxonomy: %s", path.name,
                    sum(skipped.values()), ", ".join(f"{k} ({v})" for k, v in skipped.most_common()))
