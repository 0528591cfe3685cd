"""`wsi evaluate --cells --truth --calibrate-recall`: report thresholds chosen on a lab's tuning cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import load_config
from wsi_pipeline.aggregate.cell_hits import TruthCell, best_same_class_scores, calibrate_thresholds
from wsi_pipeline.store.detections import Detections, write_detections
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()
# (class, score, centre x, centre y): one detection on each annotated cell, 100 px apart
DETECTIONS = [("LSIL", 0.875, 50, 50), ("LSIL", 0.625, 150, 50), ("LSIL", 0.375, 250, 50), ("ASC-US", 0.8, 350, 50),
              ("HSIL", 0.75, 450, 50), ("LSIL", 0.5, 550, 50)]  # scores exact in float32
TRUTH = [("LSIL", 50), ("LSIL", 150), ("LSIL", 250), ("LSIL", 350), ("HSIL", 450), ("NILM", 550)]
# the LSIL cell at 350 is covered only by an ASC-US detection: 3 of its 4 LSIL cells are reachable


def tuning_field(tmp_path):
    n = len(DETECTIONS)
    labels = np.array([TAX.index(c) for c, *_ in DETECTIONS], np.int16)
    scores = np.array([s for _, s, *_ in DETECTIONS], np.float32)
    boxes = np.array([[x - 20, y - 20, x + 20, y + 20] for *_, x, y in DETECTIONS], np.float32)
    cs = np.zeros((n, len(TAX.names)), np.float32)
    cs[np.arange(n), labels] = scores
    det_path = tmp_path / "detections.parquet"
    write_detections(det_path, Detections(boxes, scores, labels, np.zeros(n, np.int32), cs),
                     {"taxonomy": TAX.names, "complete": True})
    features = [{"type": "Feature", "properties": {"classification": {"name": c}},
                 "geometry": {"type": "Polygon", "coordinates": [[[x - 5, 45], [x + 5, 45], [x + 5, 55], [x - 5, 55], [x - 5, 45]]]}}
                for c, x in TRUTH]
    truth = tmp_path / "truth.geojson"
    truth.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return det_path, truth


def test_best_same_class_scores_and_the_chosen_thresholds():
    boxes = np.array([[0, 0, 40, 40], [0, 0, 40, 40], [100, 0, 140, 40]], np.float32)
    labels = np.array([TAX.index("LSIL"), TAX.index("HSIL"), TAX.index("HSIL")])
    scores = np.array([0.4, 0.9, 0.6], np.float32)
    truth = [TruthCell(20, 20, "LSIL"), TruthCell(120, 20, "LSIL"), TruthCell(120, 20, "HSIL")]
    got = best_same_class_scores(boxes, labels, scores, TAX, truth, ["LSIL", "HSIL"])
    assert got == {"LSIL": [pytest.approx(0.4), 0.0], "HSIL": [pytest.approx(0.6)]}  # the HSIL box on cell 1 is not LSIL
    lsil = calibrate_thresholds({"LSIL": [0.91, 0.62, 0.35, 0.0]}, 0.5)[0]
    assert (lsil.threshold, lsil.recall, lsil.reachable) == (0.62, 0.5, True)
    short = calibrate_thresholds({"LSIL": [0.91, 0.62, 0.35, 0.0]}, 0.9)[0]
    assert (short.threshold, short.recall, short.reachable) == (0.35, 0.75, False)
    assert calibrate_thresholds({"LSIL": [], "HSIL": [0.0]}, 0.5)[0].threshold == 1.0  # nothing covered: nothing counts


def test_wsi_evaluate_writes_thresholds_that_wsi_run_reads(tmp_path, capsys):
    det, truth = tuning_field(tmp_path)
    out = tmp_path / "lab_thresholds.yaml"
    assert main(["evaluate", "--cells", str(det), "--truth", str(truth), "--calibrate-recall", "0.5",
                 "--write-thresholds", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LSIL    0.625  recall 0.50 of 4" in text and "HSIL    0.750  recall 1.00 of 1" in text
    assert "NILM flagged abnormal 0.00 (0/1)" in text  # the LSIL 0.5 on the NILM cell stays under 0.625
    assert yaml.safe_load(out.read_text()) == {"report": {"class_score_thresholds": {"LSIL": 0.625, "HSIL": 0.75}}}
    assert load_config(out).report.class_score_thresholds == {"LSIL": 0.625, "HSIL": 0.75}  # a valid --config file

    assert main(["evaluate", "--cells", str(det), "--truth", str(truth), "--calibrate-recall", "1"]) == 0
    text = capsys.readouterr().out
    assert "LSIL    0.375  recall 0.75 of 4  (only 0.75 reachable" in text
    assert "NILM flagged abnormal 1.00 (1/1)" in text  # the price, on the tuning cells themselves


def test_calibration_option_errors(tmp_path, capsys):
    det, truth = tuning_field(tmp_path)
    assert main(["evaluate", "--cells", str(det), "--truth", str(truth), "--write-thresholds", str(tmp_path / "t.yaml")]) == 2
    assert "--write-thresholds needs --calibrate-recall" in capsys.readouterr().err
    assert main(["evaluate", "--cells", str(det), "--truth", str(truth), "--calibrate-recall", "1.5"]) == 2
    assert "must be in (0, 1]" in capsys.readouterr().err
    assert main(["evaluate", "runs/x.pt", "data/x", "--calibrate-recall", "0.9"]) == 2
    assert "needs --cells" in capsys.readouterr().err
