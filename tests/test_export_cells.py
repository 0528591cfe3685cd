"""Per-cell exports read back: QuPath GeoJSON (geojson + shapely), ASAP XML, CSV."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import geojson
import numpy as np
import pytest
from shapely.geometry import shape

from wsi_pipeline.export.cells import CSV_COLUMNS, CellTable, to_asap_xml, to_csv, to_geojson
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()


@pytest.fixture()
def cells() -> CellTable:
    boxes = np.array([[100.5, 200, 140.5, 260], [3000, 4000, 3050, 4020], [7, 9, 30, 33]], np.float32)
    labels = np.array([TAX.index("HSIL"), TAX.index("NILM"), TAX.index("TRICH")], np.int16)
    return CellTable(boxes, np.array([0.91, 0.62, 0.77], np.float32), labels, np.array([4, 17, 0], np.int32))


def test_geojson_has_qupath_detection_structure_and_reads_back(cells):
    text = to_geojson(cells, TAX)
    fc = geojson.loads(text)
    assert fc.is_valid and fc["type"] == "FeatureCollection" and len(fc["features"]) == 3
    for feature, box, label, score in zip(fc["features"], cells.boxes, cells.labels, cells.scores):
        props = feature["properties"]
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert props["objectType"] == "detection"  # QuPath: a detection, not an annotation
        cc = TAX[int(label)]
        assert props["classification"] == {"name": cc.name, "color": list(cc.rgb)}
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in props["classification"]["color"])
        assert props["measurements"]["score"] == pytest.approx(float(score), abs=1e-4)
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed exterior ring
        poly = shape(feature["geometry"])
        assert poly.is_valid and poly.bounds == pytest.approx(tuple(float(v) for v in box), abs=0.01)
        assert poly.area == pytest.approx(float((box[2] - box[0]) * (box[3] - box[1])), rel=1e-4)
    assert len({f["id"] for f in fc["features"]}) == 3
    json.loads(text)  # plain JSON, no NaN


def test_geojson_of_no_cells_is_an_empty_collection():
    empty = CellTable(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int16), np.zeros(0, np.int32))
    fc = geojson.loads(to_geojson(empty, TAX))
    assert fc["type"] == "FeatureCollection" and fc["features"] == []


def test_asap_xml_parses_back_to_the_same_rectangles_and_groups(cells):
    root = ET.fromstring(to_asap_xml(cells, TAX).encode())
    assert root.tag == "ASAP_Annotations"
    annotations = root.findall("Annotations/Annotation")
    assert len(annotations) == 3
    for ann, box, label in zip(annotations, cells.boxes, cells.labels):
        assert ann.get("Type") == "Rectangle" and ann.get("PartOfGroup") == TAX[int(label)].name
        coords = sorted(ann.findall("Coordinates/Coordinate"), key=lambda c: int(c.get("Order")))
        assert [int(c.get("Order")) for c in coords] == [0, 1, 2, 3]
        xs = [float(c.get("X")) for c in coords]
        ys = [float(c.get("Y")) for c in coords]
        assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx(tuple(float(v) for v in box), abs=0.01)
    groups = {g.get("Name"): g.get("Color") for g in root.findall("AnnotationGroups/Group")}
    assert groups == {c.name: c.color for c in TAX.classes}


def test_csv_rows_match_cells(cells):
    rows = list(csv.DictReader(io.StringIO(to_csv(cells, TAX))))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == 3
    first = rows[0]
    assert first["class_name"] == "HSIL" and first["abnormal"] == "true" and float(first["score"]) == pytest.approx(0.91)
    assert (float(first["center_x"]), float(first["center_y"])) == (120.5, 230.0)
    assert rows[1]["abnormal"] == "false" and int(rows[1]["patch_index"]) == 17


def test_a_new_export_format_is_one_registered_function(tmp_path):
    from wsi_pipeline.config import ReportConfig
    from wsi_pipeline.export import write_report
    from wsi_pipeline.export.cells import EXPORTERS, exporter
    from wsi_pipeline.store.detections import Detections, write_detections

    tax = TAX

    @exporter("count", "cells.count.txt", "number of counted cells")
    def to_count(cells, taxonomy):
        return f"{len(cells)} of {len(taxonomy.names)} classes\n"

    try:
        write_detections(tmp_path / "detections.parquet", Detections.empty(len(tax)),
                         {"taxonomy": tax.names, "complete": True, "slide": {"width": 100, "height": 80, "mpp": [0.5, 0.5]}})
        paths = write_report(tmp_path / "detections.parquet", tmp_path, ReportConfig(), tax)
        assert paths.count.read_text() == f"0 of {len(tax.names)} classes\n"
        assert json.loads(paths.json.read_text())["files"]["count"] == "cells.count.txt"
    finally:
        EXPORTERS.pop("count")
