"""Per-cell exports for slide viewers and spreadsheets: QuPath GeoJSON, ASAP XML, CSV.

All three list the same cells: every detection whose score reaches its class threshold, in
level-0 pixel coordinates of the slide (the coordinates QuPath and ASAP use for a slide).

* ``cells.geojson``: a FeatureCollection QuPath imports as *detections* (File > Import objects,
  or drag and drop): ``properties.objectType = "detection"``, ``classification {name, color}``,
  ``measurements {score}``.
* ``cells.xml``: ASAP annotations (one Rectangle per cell, ``PartOfGroup`` = class; one
  AnnotationGroup per class with its colour).
* ``cells.csv``: one row per cell with box, centre, score and class.

When the report measured nuclei (``wsi_pipeline/export/nuclei.py``), every format also carries each
measured cell's nucleus area (um^2), its ratio to the slide's median NILM nucleus and the
nucleus-to-cell (N/C) ratio: GeoJSON ``measurements`` (QuPath's names), CSV columns, and the ASAP
annotation name. Cells not measured (NILM cells outside the sample, non-squamous classes) or whose
nucleus was not found leave them empty / absent.

Every format is one function ``(CellTable, Taxonomy) -> text`` registered in :data:`EXPORTERS`
with :func:`exporter`; ``write_report`` writes every registered format. A new format is one
decorated function here.

Example:
    >>> sorted(EXPORTERS), EXPORTERS["xml"].file_name
    (['csv', 'geojson', 'xml'], 'cells.xml')
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io.qupath import QuPathObject, feature_collection
from ..registry import Registry
from ..taxonomy import Taxonomy

CSV_COLUMNS = ["cell_id", "class_name", "class_label", "abnormal", "score", "x0", "y0", "x1", "y1",
               "center_x", "center_y", "width_px", "height_px", "patch_index",
               "nucleus", "nucleus_area_um2", "nucleus_to_nilm_median", "nc_ratio"]
# QuPath measurement names of the nucleus measures (GeoJSON ``measurements``)
QUPATH_NUCLEUS_AREA = "Nucleus: Area µm^2"
QUPATH_NUCLEUS_TO_NILM = "Nucleus: Area / slide NILM median"
QUPATH_NC_RATIO = "Nucleus/Cell area ratio"


@dataclass
class NucleusColumns:
    """Per-cell nucleus measures, aligned with a :class:`CellTable` (NaN where there is no value).

    ``status`` is ``found``, ``not_found`` (measured, no nucleus at the cell) or ``not_measured``.
    """

    status: np.ndarray  # (N,) str
    area_um2: np.ndarray  # (N,) float
    ratio_to_nilm: np.ndarray  # (N,) float; NaN also when the slide has no measured NILM nucleus
    nc_ratio: np.ndarray  # (N,) float

    @classmethod
    def not_measured(cls, n: int) -> NucleusColumns:
        nan = np.full(n, np.nan)
        return cls(np.full(n, "not_measured", dtype=object), nan, nan.copy(), nan.copy())

    def values(self, i: int) -> tuple[float | None, float | None, float | None]:
        """Area, ratio to the NILM median and N/C of cell ``i``; ``None`` where missing."""
        return tuple(None if not np.isfinite(v) else float(v)  # type: ignore[return-value]
                     for v in (self.area_um2[i], self.ratio_to_nilm[i], self.nc_ratio[i]))


@dataclass
class CellTable:
    """The counted cells, in table order (ids are 1-based positions here, shared by all exports)."""

    boxes: np.ndarray  # (N, 4) level-0 xyxy
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) taxonomy index
    patch_index: np.ndarray  # (N,)
    nuclei: NucleusColumns | None = None  # nucleus measures, when the report measured them

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


Exporter = Callable[[CellTable, Taxonomy], str]


@dataclass(frozen=True)
class ExportFormat:
    """A registered per-cell export: its name (key in ``report.json`` ``files``), file name and writer."""

    name: str
    file_name: str
    write: Exporter
    description: str


EXPORTERS: Registry[ExportFormat] = Registry("export format")


def exporter(name: str, file_name: str, description: str) -> Callable[[Exporter], Exporter]:
    """Register ``(CellTable, Taxonomy) -> text`` as the export ``name``, written to ``file_name``."""

    def register(func: Exporter) -> Exporter:
        EXPORTERS.register(name, ExportFormat(name, file_name, func, description))
        return func

    return register


@exporter("geojson", "cells.geojson", "QuPath detections (File > Import objects)")
def to_geojson(cells: CellTable, taxonomy: Taxonomy) -> str:
    """A QuPath-importable FeatureCollection of detections (one rectangle Polygon per cell).

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> t = CellTable(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9]), np.array([6]), np.array([0]))
        >>> fc = json.loads(to_geojson(t, load_taxonomy()))
        >>> fc["features"][0]["properties"]["classification"]
        {'name': 'HSIL', 'color': [244, 67, 54]}
    """
    objects = []
    for i in range(len(cells)):
        cc = taxonomy[int(cells.labels[i])]
        box = tuple(round(float(v), 2) for v in cells.boxes[i])
        measurements = {"score": round(float(cells.scores[i]), 4)}
        if cells.nuclei is not None:
            area, ratio, nc = cells.nuclei.values(i)
            for key, value, digits in ((QUPATH_NUCLEUS_AREA, area, 2), (QUPATH_NUCLEUS_TO_NILM, ratio, 3),
                                       (QUPATH_NC_RATIO, nc, 4)):
                if value is not None:
                    measurements[key] = round(value, digits)
        objects.append(QuPathObject(f"cell-{i + 1}", box, cc.name, cc.rgb, measurements))  # type: ignore[arg-type]
    return json.dumps(feature_collection(objects, object_type="detection", locked=True))


@exporter("xml", "cells.xml", "ASAP annotations")
def to_asap_xml(cells: CellTable, taxonomy: Taxonomy) -> str:
    """ASAP annotation XML: one Rectangle per cell, grouped by class, groups coloured by class.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> t = CellTable(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9]), np.array([6]), np.array([0]))
        >>> root = ET.fromstring(to_asap_xml(t, load_taxonomy()))
        >>> root.find("Annotations/Annotation").get("PartOfGroup")
        'HSIL'
    """
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i in range(len(cells)):
        x0, y0, x1, y1 = (float(v) for v in cells.boxes[i])
        cc = taxonomy[int(cells.labels[i])]
        ann = ET.SubElement(
            annotations, "Annotation",
            Name=f"cell-{i + 1} {cc.name} {float(cells.scores[i]):.3f}{_nucleus_name(cells, i)}", Type="Rectangle",
            PartOfGroup=cc.name, Color=cc.color,
        )
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for cc in taxonomy.classes:
        group = ET.SubElement(groups, "Group", Name=cc.name, PartOfGroup="None", Color=cc.color)
        ET.SubElement(group, "Attributes")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _nucleus_name(cells: CellTable, i: int) -> str:
    """The nucleus measures as a suffix of an ASAP annotation name (ASAP shows names; it has no measurements)."""
    if cells.nuclei is None:
        return ""
    area, ratio, nc = cells.nuclei.values(i)
    if area is None:
        return " nucleus not found" if cells.nuclei.status[i] == "not_found" else ""
    return f" nucleus {area:.1f} um2" + (f" {ratio:.2f}x NILM" if ratio is not None else "") + f" N/C {nc:.3f}"


@exporter("csv", "cells.csv", "one row per cell, level-0 pixel coordinates")
def to_csv(cells: CellTable, taxonomy: Taxonomy) -> str:
    """One row per counted cell (columns :data:`CSV_COLUMNS`), coordinates in level-0 px.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> t = CellTable(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9]), np.array([6]), np.array([3]))
        >>> to_csv(t, load_taxonomy()).splitlines()[1].split(",")[:5]
        ['1', 'HSIL', 'High-grade squamous intraepithelial lesion', 'true', '0.9000']
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(len(cells)):
        x0, y0, x1, y1 = (float(v) for v in cells.boxes[i])
        cc = taxonomy[int(cells.labels[i])]
        writer.writerow([
            i + 1, cc.name, cc.label, "true" if cc.abnormal else "false", f"{float(cells.scores[i]):.4f}",
            f"{x0:.1f}", f"{y0:.1f}", f"{x1:.1f}", f"{y1:.1f}", f"{(x0 + x1) / 2:.1f}", f"{(y0 + y1) / 2:.1f}",
            f"{x1 - x0:.1f}", f"{y1 - y0:.1f}", int(cells.patch_index[i]), *_nucleus_fields(cells, i),
        ])
    return out.getvalue()


def _nucleus_fields(cells: CellTable, i: int) -> list[str]:
    if cells.nuclei is None:
        return ["not_measured", "", "", ""]
    values = cells.nuclei.values(i)
    return [str(cells.nuclei.status[i])] + ["" if v is None else f"{v:.{d}f}" for v, d in zip(values, (2, 3, 4))]
