"""Real-data training sets: importers round-trip the report's exports, composited boxes lie on their
pasted cells, train/test are disjoint, the nucleus-hit metric on hand-made cases, `wsi data` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.datasets.annotations import Annotation, load_annotations
from wsi_pipeline.datasets.composite import (
    BackgroundSource, build_composite_set, in_test_split, load_composite_config, split_files,
)
from wsi_pipeline.errors import ArtifactError, ConfigError
from wsi_pipeline.export.cells import CellTable, to_asap_xml, to_geojson
from wsi_pipeline.aggregate.cell_hits import TruthCell, circle_ranking, nucleus_hits
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()


def _cells() -> tuple[CellTable, list[Annotation]]:
    boxes = np.array([[10, 20, 60, 80], [100.5, 200.25, 140, 260], [300, 300, 330, 320]], np.float32)
    names = ["HSIL", "LSIL", "NILM"]
    labels = np.array([TAX.index(n) for n in names])
    table = CellTable(boxes, np.array([0.9, 0.8, 0.7]), labels, np.zeros(3, int))
    return table, [Annotation(tuple(float(v) for v in b), n) for b, n in zip(boxes, names)]


@pytest.mark.parametrize("writer,suffix", [(to_geojson, ".geojson"), (to_asap_xml, ".xml")])
def test_report_exports_read_back_as_annotations(tmp_path, writer, suffix):
    """A corrected `wsi report` export (QuPath GeoJSON or ASAP XML) re-imports box for box."""
    table, expected = _cells()
    path = tmp_path / f"cells{suffix}"
    path.write_text(writer(table, TAX))
    got = load_annotations(path, TAX, {})
    assert [a.class_name for a in got] == [a.class_name for a in expected]
    np.testing.assert_allclose([a.box for a in got], [a.box for a in expected], atol=0.01)


def test_importer_errors_are_one_line(tmp_path):
    bad = tmp_path / "cells.xml"
    bad.write_text("<ASAP_Annotations><Annotations><Annotation PartOfGroup='HSIL'>")
    with pytest.raises(ArtifactError, match="not valid XML"):
        load_annotations(bad, TAX, {})
    bad.write_text("<ASAP_Annotations><Annotations><Annotation PartOfGroup='HSIL'><Coordinates>"
                   "<Coordinate X='a' Y='1'/></Coordinates></Annotation></Annotations></ASAP_Annotations>")
    with pytest.raises(ArtifactError, match="without numeric X/Y"):
        load_annotations(bad, TAX, {})


def test_wsi_data_build_reads_asap_xml_and_boxes_land_on_cells(tmp_path, cytology_dir):
    """Cut a patch set from a real CRIC field whose annotations come back through the ASAP exporter:
    every patch box sits where the field's annotation is, scaled to the patch resolution."""
    from wsi_pipeline.io.tiffwriter import wrap_image_as_slide

    field_id = "4372f7114534a5e0b688673c15a43fa9"
    image = cv2.cvtColor(cv2.imread(str(cytology_dir / "cric" / f"{field_id}.webp")), cv2.COLOR_BGR2RGB)
    slide = wrap_image_as_slide(image, tmp_path / "field.svs", mpp=0.25)
    aliases = {"negative for intraepithelial lesion": "NILM"}
    truth = load_annotations(cytology_dir / "cric" / f"{field_id}.geojson", TAX, aliases)
    table = CellTable(np.array([a.box for a in truth], np.float32), np.ones(len(truth)),
                      np.array([TAX.index(a.class_name) for a in truth]), np.zeros(len(truth), int))
    (tmp_path / "field.xml").write_text(to_asap_xml(table, TAX))
    assert main(["data", "build", "--out", str(tmp_path / "ds"), "--slide", str(slide), "--annotations",
                 str(tmp_path / "field.xml"), "--target-mpp", "0.5", "--patch-size", "256", "--no-progress"]) == 0
    coco = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert coco["annotations"]
    by_id = {im["id"]: im for im in coco["images"]}
    for a in coco["annotations"]:
        im = by_id[a["image_id"]]
        x, y, w, h = a["bbox"]
        cx, cy = im["x"] + (x + w / 2) * 2, im["y"] + (y + h / 2) * 2  # 0.5 / 0.25 um/px
        name = TAX.names[a["category_id"] - 1]
        # a box centre (clipped boxes move a little) lies within its annotated cell of that class
        assert any(t.class_name == name and t.box[0] - 1 <= cx <= t.box[2] + 1 and t.box[1] - 1 <= cy <= t.box[3] + 1
                   for t in truth)


@pytest.fixture(scope="module")
def composite_cfg(cytology_dir):
    return load_composite_config(overrides={
        "crops": str(cytology_dir / "cell_crops"), "images": 12, "seed": 3,
        "backgrounds": [{"path": str(cytology_dir / "lbc_field.jpg"), "mpp": 0.27}],
        "positives_per_image": [1, 3], "negatives_per_image": [1, 2]})


def test_composited_boxes_lie_on_pasted_cells(tmp_path, composite_cfg):
    """Inside a positive box the image is darker than the same window of the plain background would be:
    compare against the set built with no positives and identical random draws is not possible, so check
    the box holds stained content (optical density) well above the glass around it."""
    summary = build_composite_set(composite_cfg, tmp_path, "train", progress=False)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert summary.n_images == 12 and coco["info"]["target_mpp"] == 0.5 and coco["info"]["split"] == "train"
    assert sum(summary.class_counts.values()) == len(coco["annotations"]) > 0
    assert summary.n_negatives > 0
    images = {im["id"]: im for im in coco["images"]}
    for a in coco["annotations"]:
        img = cv2.imread(str(tmp_path / "images" / images[a["image_id"]]["file_name"]))
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256
        inside = img[y : y + h, x : x + w].astype(float)
        od = -np.log((inside + 1) / 256).sum(2)
        assert od.max() > 0.6, a  # a stained cell, not empty glass


def test_class_frequencies_give_a_long_tail(tmp_path, composite_cfg):
    from dataclasses import replace

    cfg = replace(composite_cfg, images=60, class_frequencies={"LSIL": 9.0, "SCC": 1.0})
    counts = build_composite_set(cfg, tmp_path, "train", progress=False).class_counts
    assert counts["LSIL"] > 3 * counts["SCC"] > 0  # expected 9:1
    assert sum(v for k, v in counts.items() if k not in ("LSIL", "SCC")) == 0  # classes left out are not pasted
    with pytest.raises(ConfigError, match="not in the taxonomy"):
        build_composite_set(replace(cfg, class_frequencies={"LSIL": 1.0, "KOILO": 1.0}), tmp_path / "bad", progress=False)


def test_train_and_test_use_disjoint_crops_and_regions(cytology_dir, composite_cfg):
    folder = cytology_dir / "cell_crops" / "4"
    train, test = set(split_files(folder, "train", 0.2)), set(split_files(folder, "test", 0.2))
    assert train and test and not train & test
    assert len(train) + len(test) == len(list(folder.glob("*.jpg")))
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3
    assert in_test_split(Path("4/123.jpg"), 0.2) == in_test_split(Path("/elsewhere/4/123.jpg"), 0.2)  # stable


def test_composite_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="positives_per_image"):
        load_composite_config(overrides={"positives_per_image": [3, 1]})
    with pytest.raises(ConfigError, match="unknown key"):
        load_composite_config(overrides={"imagez": 3})
    cfg = load_composite_config(overrides={"crops": str(tmp_path / "none"), "backgrounds": [{"path": "x.jpg", "mpp": 0.3}]})
    with pytest.raises(ArtifactError, match="crops folder not found"):
        build_composite_set(cfg, tmp_path / "out", progress=False)


def test_wsi_data_composite_cli(tmp_path, cytology_dir):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"crops: {cytology_dir / 'cell_crops'}\nbackgrounds:\n  - {{path: {cytology_dir / 'lbc_field.jpg'}, mpp: 0.27}}\n")
    assert main(["data", "composite", str(cfg), "--out", str(tmp_path / "set"), "--images", "8", "--no-progress"]) == 0
    assert len(json.loads((tmp_path / "set" / "train" / "annotations.json").read_text())["images"]) == 8
    assert len(json.loads((tmp_path / "set" / "test" / "annotations.json").read_text())["images"]) == 2


# ------------------------------------------------------------------ nucleus hits


def test_nucleus_hits_hand_made_case():
    """Two LSIL nuclei (one found as LSIL, one only as HSIL), one ASC-US missed (score under threshold),
    three NILM nuclei of which one lies in an abnormal box."""
    idx = TAX.index
    boxes = np.array([[0, 0, 20, 20], [40, 0, 60, 20], [80, 0, 100, 20], [0, 40, 30, 60], [200, 200, 220, 220]], np.float32)
    labels = np.array([idx("LSIL"), idx("HSIL"), idx("ASC-US"), idx("HSIL"), idx("NILM")])
    scores = np.array([0.9, 0.7, 0.3, 0.8, 0.95], np.float32)
    truth = [TruthCell(10, 10, "LSIL"), TruthCell(50, 10, "LSIL"), TruthCell(90, 10, "ASC-US"),
             TruthCell(10, 50, "NILM"), TruthCell(210, 210, "NILM"), TruthCell(500, 500, "NILM")]
    r = nucleus_hits(boxes, labels, scores, [0.5] * len(TAX.names), TAX, truth)
    assert (r.per_class["LSIL"].total, r.per_class["LSIL"].found, r.per_class["LSIL"].found_abnormal) == (2, 1, 2)
    assert (r.per_class["ASC-US"].found, r.per_class["ASC-US"].found_abnormal) == (0, 0)
    assert (r.abnormal_found, r.abnormal_total) == (2, 3)
    assert (r.nilm_flagged, r.nilm_total) == (1, 3)
    assert r.per_class["NILM"].found == 1  # the NILM detection at 210,210 finds its NILM nucleus
    # a per-class threshold changes what counts: ASC-US at 0.25 finds the third cell
    thresholds = [0.5] * len(TAX.names)
    thresholds[idx("ASC-US")] = 0.25
    assert nucleus_hits(boxes, labels, scores, thresholds, TAX, truth).abnormal_found == 3
    pooled = r.add(r)
    assert (pooled.abnormal_found, pooled.abnormal_total, pooled.per_class["LSIL"].total) == (4, 6, 4)


def test_circle_ranking_without_detections():
    r = circle_ranking(np.zeros((0, 4)), np.zeros((0, len(TAX.names))), np.zeros(0, int), np.zeros(0),
                       [0.5] * len(TAX.names), TAX, [(0, 0, 10, 10)])
    assert r.top_in_circle is None and r.counted_abnormal == 0


def test_circle_ranking_ranks_the_best_circled_detection():
    cs = np.zeros((4, len(TAX.names)), np.float32)
    cs[:, TAX.index("HSIL")] = [0.9, 0.7, 0.6, 0.2]
    cs[3, TAX.index("NILM")] = 0.95  # a confident normal call does not rank: only abnormal scores do
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110], [102, 102, 108, 108]], np.float32)
    r = circle_ranking(boxes, cs, cs.argmax(1), cs.max(1), [0.5] * len(TAX.names), TAX, [(95, 95, 115, 115)])
    assert (r.top_in_circle, r.best_circle_rank, r.counted_abnormal, r.counted_abnormal_outside) == (False, 3, 3, 2)
    assert circle_ranking(boxes, cs, cs.argmax(1), cs.max(1), [0.5] * len(TAX.names), TAX,
                          [(500, 500, 510, 510)]).best_circle_rank is None
    assert circle_ranking(boxes, cs, cs.argmax(1), cs.max(1), [0.5] * len(TAX.names), TAX,
                          [(0, 0, 12, 12)]).best_circle_rank == 1


def test_wsi_evaluate_circles_ranks_a_readers_circled_cells(tmp_path, capsys):
    from wsi_pipeline.store.detections import Detections, write_detections

    cs = np.zeros((3, len(TAX.names)), np.float32)
    cs[:, TAX.index("AGC")] = [0.9, 0.3, 0.0]
    cs[:, TAX.index("HSIL")] = [0.0, 0.6, 0.4]
    det = Detections(boxes=np.array([[0, 0, 10, 10], [100, 100, 120, 120], [300, 300, 310, 310]], np.float32),
                     scores=cs.max(1), labels=cs.argmax(1).astype(np.int16), patch_index=np.zeros(3, np.int32),
                     class_scores=cs)
    det_path = tmp_path / "detections.parquet"
    write_detections(det_path, det, {"taxonomy": TAX.names, "complete": True})
    circle = {"type": "Feature", "properties": {"name": "circled by reader"},  # not a taxonomy label: still a circle
              "geometry": {"type": "Polygon", "coordinates": [[[90, 90], [130, 90], [130, 130], [90, 130], [90, 90]]]}}
    circles = tmp_path / "circles.geojson"
    circles.write_text(json.dumps({"type": "FeatureCollection", "features": [circle]}))
    out = tmp_path / "circles.json"
    assert main(["evaluate", "--cells", str(det_path), "--circles", str(circles), "--json", str(out)]) == 0
    field = json.loads(out.read_text())["fields"][0]
    assert (field["top_in_circle"], field["best_circle_rank"], field["counted_abnormal_outside"]) == (False, 2, 1)
    assert "top detection in a circle: 0/1 fields; median best circled rank 2" in capsys.readouterr().out
    assert main(["evaluate", "--cells", str(det_path), "--circles", str(circles), "--circles", str(circles)]) == 2
    assert "one --circles file per --cells" in capsys.readouterr().err


def test_high_grade_cells_count_as_found_only_by_a_high_grade_call():
    """ASC-H called HSIL is high grade found as high grade; HSIL called LSIL is found as abnormal only."""
    boxes = np.array([[0, 0, 20, 20], [50, 50, 70, 70], [100, 100, 120, 120]], np.float32)
    labels = np.array([TAX.index("HSIL"), TAX.index("LSIL"), TAX.index("SCC")])
    scores = np.array([0.9, 0.9, 0.2], np.float32)  # the SCC call is below its threshold: not counted
    truth = [TruthCell(10, 10, "ASC-H"), TruthCell(60, 60, "HSIL"), TruthCell(110, 110, "SCC"), TruthCell(5, 5, "LSIL")]
    r = nucleus_hits(boxes, labels, scores, [0.5] * len(TAX.names), TAX, truth)
    assert (r.high_grade_found, r.high_grade_total) == (1, 3)
    assert (r.abnormal_found, r.abnormal_total) == (3, 4)
    assert r.to_dict()["high_grade_recall"] == pytest.approx(1 / 3)
    pooled = r.add(r)
    assert (pooled.high_grade_found, pooled.high_grade_total) == (2, 6)
