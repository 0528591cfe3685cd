"""Slide-level aggregation on hand-made detection tables with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.aggregate import summarize, suspicion_score
from wsi_pipeline.config import ReportConfig, load_config
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.store.detections import Detections, read_detections, write_detections
from wsi_pipeline.taxonomy import load_taxonomy

TAX = load_taxonomy()


def table(cells: list[tuple[str, float]], area_mm2: float | None = 2.0) -> Detections:
    """Detections with one row per (class, score), boxes 20 px apart on a line."""
    n = len(cells)
    labels = np.array([TAX.index(c) for c, _ in cells], np.int16)
    scores = np.array([s for _, s in cells], np.float32)
    class_scores = np.zeros((n, len(TAX)), np.float32)
    class_scores[np.arange(n), labels] = scores
    boxes = np.array([[20 * i, 0, 20 * i + 16, 16] for i in range(n)], np.float32).reshape(n, 4)
    meta = {"taxonomy": TAX.names, "complete": True, "store": {"cell_area_mm2": area_mm2}}
    return Detections(boxes, scores, labels, np.zeros(n, np.int32), class_scores, meta=meta)


def test_no_detections_is_nilm_limited_with_zero_counts():
    s = summarize(table([]), TAX, ReportConfig())
    assert s.category.name == "NILM" and s.category.evidence_cells == 0
    assert s.suspicion_score == 0.0 and s.top_cells == {} and s.n_detections == 0
    assert all(c.n_counted == 0 and c.score_mean is None for c in s.classes)
    assert s.adequacy.status == "limited" and s.adequacy.squamous_cells == 0


def test_only_normal_cells_counts_densities_and_adequacy():
    cells = [("NILM", 0.9)] * 6 + [("NILM", 0.3)] * 2 + [("INFL", 0.7)] * 3
    s = summarize(table(cells, area_mm2=2.0), TAX, ReportConfig(adequacy_min_squamous=6))
    nilm = s.by_name("NILM")
    assert (nilm.n_detected, nilm.n_counted) == (8, 6)
    assert nilm.density_per_mm2 == pytest.approx(3.0)
    assert nilm.score_mean == pytest.approx(0.9) and nilm.score_max == pytest.approx(0.9)
    assert s.by_name("INFL").n_counted == 3
    assert s.category.name == "NILM" and s.suspicion_score == 0.0
    # INFL is not squamous: 6 squamous cells reach a minimum of 6
    assert s.adequacy.status == "adequate" and s.adequacy.squamous_cells == 6
    assert summarize(table(cells), TAX, ReportConfig(adequacy_min_squamous=7)).adequacy.status == "limited"


def test_adequacy_minimum_follows_the_preparation_unless_the_config_sets_one():
    cells = [("NILM", 0.9)] * 6000 + [("INFL", 0.9)] * 3000
    lbc = summarize(table(cells), TAX, ReportConfig()).adequacy
    assert (lbc.status, lbc.minimum, lbc.preparation) == ("adequate", 5000, "liquid_based")
    assert "Bethesda" in lbc.minimum_source and "liquid-based" in lbc.minimum_source
    smear = summarize(table(cells), TAX, ReportConfig(preparation="conventional")).adequacy
    assert (smear.status, smear.minimum) == ("limited", 8000), "6,000 squamous cells are too few for a smear"
    assert "conventional" in smear.minimum_source
    own = summarize(table(cells), TAX, ReportConfig(preparation="conventional", adequacy_min_squamous=6000)).adequacy
    assert (own.status, own.minimum) == ("adequate", 6000) and "config" in own.minimum_source


def test_unknown_preparation_is_a_config_error(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("report:\n  preparation: smear\n")
    with pytest.raises(ConfigError, match="report.preparation must be one of liquid_based, conventional"):
        load_config(bad)


def test_single_high_grade_cell_below_score_threshold_stays_nilm():
    s = summarize(table([("NILM", 0.9), ("HSIL", 0.45)]), TAX, ReportConfig())
    assert s.category.name == "NILM"
    assert s.by_name("HSIL").n_detected == 1 and s.by_name("HSIL").n_counted == 0
    assert "HSIL" not in s.top_cells
    assert s.suspicion_score > 0  # still ranks above a clean slide


def test_single_high_grade_cell_below_evidence_threshold_stays_nilm():
    cfg = ReportConfig(class_min_cells={"HSIL": 2})
    s = summarize(table([("HSIL", 0.95)]), TAX, cfg)
    assert s.category.name == "NILM"
    assert [c.score for c in s.top_cells["HSIL"]] == [pytest.approx(0.95)]  # shown for review anyway
    # the default config needs one HSIL cell
    assert summarize(table([("HSIL", 0.95)]), TAX, ReportConfig()).category.name == "HSIL"


def test_mixed_slide_most_severe_evidenced_class_wins_and_organisms_flagged():
    cells = (
        [("NILM", 0.8)] * 10 + [("ASC-US", 0.7)] * 5 + [("LSIL", 0.9)] * 3
        + [("ASC-H", 0.6)] * 1  # needs 2 (default min_cells): not enough evidence
        + [("TRICH", 0.8)] * 2 + [("CAND", 0.9)] * 1  # CAND below min_cells=2
    )
    s = summarize(table(cells), TAX, ReportConfig())
    assert s.category.name == "LSIL" and s.category.evidence_cells == 3
    assert s.category.label.startswith("Low-grade")
    assert s.category.organisms == ["TRICH"]
    assert s.adequacy.squamous_cells == 10 + 5 + 3 + 1
    assert set(s.top_cells) == {"ASC-US", "LSIL", "ASC-H"}


def test_top_cells_sorted_limited_and_located():
    cells = [("LSIL", v) for v in (0.6, 0.95, 0.7, 0.8)]
    s = summarize(table(cells), TAX, ReportConfig(top_k=3))
    top = s.top_cells["LSIL"]
    assert [c.score for c in top] == pytest.approx([0.95, 0.8, 0.7]) and [c.rank for c in top] == [1, 2, 3]
    assert top[0].row == 1 and top[0].box == (20.0, 0.0, 36.0, 16.0) and top[0].center == (28.0, 8.0)


def test_per_class_score_threshold_from_config():
    cfg = load_config(overrides={"report": {"class_score_thresholds": {"SCC": 0.3}, "class_min_cells": {"SCC": 1}}}).report
    assert summarize(table([("SCC", 0.35)]), TAX, cfg).category.name == "SCC"
    assert summarize(table([("SCC", 0.35)]), TAX, ReportConfig()).category.name == "NILM"


def test_unknown_class_in_config_is_config_error():
    with pytest.raises(ConfigError, match="unknown class 'HSIL2'"):
        summarize(table([]), TAX, ReportConfig(class_min_cells={"HSIL2": 1}))


def test_density_unknown_without_cell_area():
    s = summarize(table([("NILM", 0.9)], area_mm2=None), TAX, ReportConfig())
    assert s.cell_area_mm2 is None and s.by_name("NILM").density_per_mm2 is None


def test_suspicion_score_orders_slides_by_severity_and_amount():
    def score(cells):
        return summarize(table(cells), TAX, ReportConfig(suspicion_top_k=4)).suspicion_score

    clean, one_ascus, one_hsil, four_hsil = (
        score([("NILM", 0.9)]), score([("ASC-US", 0.9)]), score([("HSIL", 0.9)]), score([("HSIL", 0.9)] * 4)
    )
    assert clean < one_ascus < one_hsil < four_hsil <= 1.0
    sev = TAX["HSIL"].severity / TAX["SCC"].severity
    assert four_hsil == pytest.approx(0.9 * sev)  # documented formula: mean of the top-4 weighted scores


def test_suspicion_uses_abnormal_class_scores_of_any_predicted_class():
    s = np.zeros((1, len(TAX)), np.float32)
    s[0, TAX.index("NILM")] = 0.9
    s[0, TAX.index("SCC")] = 0.4  # the detector's second opinion on a cell called NILM
    assert suspicion_score(s, TAX, top_k=1) == pytest.approx(0.4)


def test_summary_survives_parquet_round_trip(tmp_path):
    det = table([("HSIL", 0.9), ("NILM", 0.8)])
    path = tmp_path / "detections.parquet"
    write_detections(path, det, det.meta)
    s = summarize(read_detections(path), TAX, ReportConfig())
    assert s.category.name == "HSIL" and s.to_dict()["top_cells"]["HSIL"][0]["center"] == [8.0, 8.0]
