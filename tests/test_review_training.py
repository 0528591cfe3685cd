"""Review decisions back into training (issue 25 item 3), the report of a reviewed slide (item 4), `wsi review`,
and the simulated reviewer (the library piece of item 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_helpers import CELLS, TAX, make_detections

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import ReportConfig
from wsi_pipeline.datasets.annotations import Annotation
from wsi_pipeline.datasets.review import load_review_labels, simulate_review, simulate_review_file
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.export import write_report
from wsi_pipeline.models.data import CocoPatchDataset
from wsi_pipeline.pipeline import collect_outcomes, write_summary
from wsi_pipeline.store import review as decisions

# the flagged cells of CELLS: cell-6 HSIL (1000, 512), cell-4 LSIL (400, 800), cell-5 LSIL (1300, 850),
# cell-7 HSIL 0.40 below threshold (20, 20); the slide is 0.25 um/px
DECIDED = {"cell-6": ("confirmed", "HSIL", None), "cell-4": ("corrected", "ASC-US", None),
           "cell-5": ("rejected", "Rejected", "debris")}


@pytest.fixture()
def reviewed(tmp_path, field_slide, field_info):
    """A `wsi-run`-style slide folder (results/field) whose review.geojson holds three decisions and one pending cell."""
    out = tmp_path / "results" / "field"
    det = make_detections(tmp_path / "detections.parquet", CELLS, field_info)
    out.mkdir(parents=True)
    shutil.copy(det, out / "detections.parquet")
    write_report(out / "detections.parquet", out, ReportConfig(), TAX)
    doc = json.loads((out / "review.geojson").read_text())
    for f in doc["features"]:
        if f["id"] in DECIDED:
            state, name, reason = DECIDED[f["id"]]
            f["properties"].update(review=state, classification={"name": name, "color": [1, 2, 3]}, rejected_as=reason,
                                   reviewer="Dr Tester", timestamp="2026-12-06T04:00:00.000Z")
    decisions.write_review(out / "review.geojson", doc)
    return out


def _whole_boxes(coco: dict, name: str) -> list[tuple[dict, list[float]]]:
    cid = TAX.index(name) + 1
    return [(next(i for i in coco["images"] if i["id"] == a["image_id"]), a["bbox"]) for a in coco["annotations"]
            if a["category_id"] == cid]


def _level0_centre(image: dict, bbox: list[float], patch: int) -> tuple[float, float]:
    scale = image["level0_size"] / patch
    return image["x"] + (bbox[0] + bbox[2] / 2) * scale, image["y"] + (bbox[1] + bbox[3] / 2) * scale


def test_build_takes_confirmed_and_corrected_as_boxes_and_rejected_as_negatives(tmp_path, reviewed, field_slide, capsys):
    out = tmp_path / "set"
    args = ["data", "build", "--out", str(out), "--slide", str(field_slide), "--annotations",
            str(reviewed / "review.geojson"), "--patch-size", "64", "--target-mpp", "0.5", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert ("review files: 1 confirmed + 1 corrected cells as labelled boxes, 1 rejected calls as hard negatives "
            "(1 patches), 1 pending ignored") in printed
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["info"]["annotated_classes"] == TAX.abnormal_names()  # a review marks only the cells it flagged
    assert coco["info"]["review"]["rejected"] == 1
    whole = lambda name: [(im, b) for im, b in _whole_boxes(coco, name) if b[2] == pytest.approx(20) and b[3] == pytest.approx(20)]  # noqa: E731
    hsil, ascus = whole("HSIL"), _whole_boxes(coco, "ASC-US")
    assert hsil and all(_level0_centre(im, b, 64) == pytest.approx((1000, 512), abs=2) for im, b in hsil)  # 40 px at 0.25 um/px
    full = [(im, b) for im, b in ascus if b[2] == pytest.approx(32) and b[3] == pytest.approx(32)]  # 64 px LSIL box, now ASC-US
    assert full and all(_level0_centre(im, b, 64) == pytest.approx((400, 800), abs=2) for im, b in full)
    assert not _whole_boxes(coco, "LSIL"), "the model's LSIL calls were corrected or rejected: no LSIL box"
    assert all(not (im["x"] <= 20 <= im["x"] + im["level0_size"] and im["y"] <= 20 <= im["y"] + im["level0_size"])
               for im, _ in _whole_boxes(coco, "HSIL")), "the pending HSIL cell at (20, 20) is not a box"
    negatives = [im for im in coco["images"] if "rejected_as" in im]
    assert len(negatives) == 1
    neg = negatives[0]
    assert (neg["negative_for"], neg["rejected_as"], neg["call_x"], neg["call_y"]) == ("LSIL", "debris", 1300.0, 850.0)
    assert neg["x"] <= 1300 <= neg["x"] + neg["level0_size"] and neg["y"] <= 850 <= neg["y"] + neg["level0_size"]
    assert not [a for a in coco["annotations"] if a["image_id"] == neg["id"]
                and abs(_level0_centre(neg, a["bbox"], 64)[0] - 1300) < 20], "no box on the rejected call"
    dataset = CocoPatchDataset(out)
    assert len(dataset) == len(coco["images"])

    # a batch folder of reviewed slide folders (a slide folder not reviewed yet is left out): the same labels
    unreviewed = reviewed.parent / "not_reviewed"
    unreviewed.mkdir()
    shutil.copy(reviewed / "detections.parquet", unreviewed)
    pending = json.loads((reviewed / "review.geojson").read_text())
    for f in pending["features"]:
        f["properties"].update(review="pending", rejected_as=None, reviewer=None, timestamp=None)
    decisions.write_review(unreviewed / "review.geojson", pending)
    with pytest.raises(ArtifactError, match="no decision yet"):
        load_review_labels(unreviewed / "review.geojson", TAX)
    out2 = tmp_path / "set2"
    assert main(["data", "build", "--out", str(out2), "--folder", str(reviewed.parent), "--patch-size", "64",
                 "--target-mpp", "0.5", "--no-progress"]) == 0
    assert "1 confirmed + 1 corrected" in capsys.readouterr().out
    assert json.loads((out2 / "annotations.json").read_text())["info"]["review"] == coco["info"]["review"]


def test_a_cell_reviewed_as_a_class_the_set_does_not_annotate_becomes_a_negative(tmp_path, reviewed, field_slide, capsys):
    """"No, NILM" on a flagged HSIL call: a review set annotates only the abnormal classes, so a NILM box would teach
    NILM only positives (it then fires on every cell); the call becomes a hard negative instead. With NILM among
    the annotated classes (given by the lab), it stays a NILM box."""
    doc = json.loads((reviewed / "review.geojson").read_text())
    for f in doc["features"]:
        if f["id"] == "cell-6":
            f["properties"].update(review="corrected", classification={"name": "NILM", "color": [1, 2, 3]})
    decisions.write_review(reviewed / "review.geojson", doc)
    base = ["data", "build", "--slide", str(field_slide), "--annotations", str(reviewed / "review.geojson"),
            "--patch-size", "64", "--target-mpp", "0.5", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "set")]) == 0
    assert "(1 of a class the set does not annotate, e.g. NILM: hard negatives instead)" in capsys.readouterr().out
    coco = json.loads((tmp_path / "set" / "annotations.json").read_text())
    assert not _whole_boxes(coco, "NILM") and not _whole_boxes(coco, "HSIL")
    moved = [im for im in coco["images"] if im.get("rejected_as") == "reviewed as NILM"]
    assert len(moved) == 1 and (moved[0]["negative_for"], moved[0]["call_x"], moved[0]["call_y"]) == ("HSIL", 1000.0, 512.0)
    assert coco["info"]["review"]["reviewed_outside_annotated"] == 1

    assert main([*base, "--out", str(tmp_path / "set2"), "--annotated-classes", ",".join(["NILM", *TAX.abnormal_names()])]) == 0
    coco2 = json.loads((tmp_path / "set2" / "annotations.json").read_text())
    assert _whole_boxes(coco2, "NILM") and not [im for im in coco2["images"] if im.get("rejected_as") == "reviewed as NILM"]


def test_a_review_of_another_slide_is_refused_in_one_line_and_nothing_is_written(tmp_path, reviewed, field_slide, capsys):
    doc = json.loads((reviewed / "review.geojson").read_text())
    doc["slide"] = {"name": "other_slide", "fingerprint": "0" * 64}
    other = tmp_path / "other_review.geojson"
    other.write_text(json.dumps(doc))
    out = tmp_path / "set"
    assert main(["data", "build", "--out", str(out), "--slide", str(field_slide), "--annotations", str(other),
                 "--patch-size", "64", "--target-mpp", "0.5", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other_review.geojson" in err[0] and "other_slide" in err[0] and "fingerprint" in err[0]
    assert not out.exists(), "nothing written"
    # a decided cell without what it needs is refused as well, before anything is written
    doc = json.loads((reviewed / "review.geojson").read_text())
    doc["features"][2]["properties"]["rejected_as"] = None
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="rejected but gives no rejected_as"):
        load_review_labels(bad, TAX)
    assert main(["data", "build", "--out", str(out), "--slide", str(field_slide), "--annotations", str(bad),
                 "--no-progress"]) == 1 and not out.exists()


def test_report_of_a_reviewed_slide_says_so_and_keeps_the_model_calls(tmp_path, reviewed):
    det = reviewed / "detections.parquet"
    before_keys = set(json.loads((reviewed / "report.json").read_text()))
    assert "review" not in before_keys  # written before any decision: no review key at all
    write_report(det, reviewed, ReportConfig(), TAX)  # the report rerun reads the decisions next to it
    report = json.loads((reviewed / "report.json").read_text())
    assert set(report) == before_keys | {"review"}
    r = report["review"]
    assert (r["flagged"], r["confirmed"], r["corrected"], r["rejected"], r["pending"]) == (4, 1, 1, 1, 1)
    assert r["status"] == "in_progress" and r["reviewers"] == ["Dr Tester"]
    assert r["by_model_call"] == {"HSIL": {"HSIL": 1}, "LSIL": {"ASC-US": 1, "rejected: debris": 1}}
    assert report["category"]["name"] == "HSIL"  # the model's category, counts and calls are unchanged
    lsil = {tuple(c["center"]): c for c in report["top_cells"] if c["class"] == "LSIL"}
    assert lsil[(400.0, 800.0)]["review"]["class"] == "ASC-US" and lsil[(1300.0, 850.0)]["review"]["review"] == "rejected"
    html = (reviewed / "report.html").read_text()
    assert 'id="review-banner"' in html and "1 corrected" in html and "reviewer: ASC-US (corrected)" in html
    assert "model LSIL" in html
    # the decisions survived the rerun
    assert decisions.counts(json.loads((reviewed / "review.geojson").read_text()))["rejected"] == 1

    # the batch summary and index say so
    csv_path, index = write_summary(reviewed.parent, collect_outcomes(reviewed.parent))
    assert "1 confirmed, 1 corrected, 1 rejected, 1 pending" in csv_path.read_text()
    assert "1 confirmed, 1 corrected, 1 rejected" in index.read_text() and "review.html" in index.read_text()


def test_wsi_review_imports_a_saved_file_and_refuses_another_slides(tmp_path, reviewed, capsys):
    saved = tmp_path / "downloaded.geojson"
    shutil.copy(reviewed / "review.geojson", saved)
    # start the folder over from a pending file: the import brings the decisions back
    pending = json.loads(saved.read_text())
    for f in pending["features"]:
        f["properties"].update(review="pending", rejected_as=None, reviewer=None, timestamp=None)
    decisions.write_review(reviewed / "review.geojson", pending)
    assert main(["review", str(reviewed), "--import", str(saved), "--no-open"]) == 0
    out = capsys.readouterr().out
    assert "1 confirmed, 1 corrected, 1 rejected, 1 pending" in out
    assert decisions.counts(json.loads((reviewed / "review.geojson").read_text()))["corrected"] == 1
    assert '"review": "corrected"' in (reviewed / "review.html").read_text(), "the page embeds the decisions"
    other = json.loads(saved.read_text())
    other["slide"]["fingerprint"] = "1" * 64
    saved.write_text(json.dumps(other))
    assert main(["review", str(reviewed), "--import", str(saved), "--no-open"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "downloaded.geojson" in err[0] and "refused" in err[0]
    (reviewed / "review.html").unlink()  # a folder without a page gets one
    assert main(["review", str(reviewed), "--no-open"]) == 0 and (reviewed / "review.html").is_file()


def test_simulated_reviewer_answers_from_annotated_nuclei_and_its_file_trains(tmp_path, reviewed, field_slide, capsys):
    truth = [Annotation((1004, 515, 1004, 515), "HSIL"),  # on cell-6: confirmed
             Annotation((390, 790, 390, 790), "NILM"),  # in cell-4's box (LSIL call): corrected to NILM
             Annotation((20, 80, 20, 80), "NILM")]  # 60 px = 15 um from cell-7: neither hit nor far: pending
    # cell-5 at (1300, 850) is hundreds of um from every annotated nucleus: rejected
    doc = simulate_review(reviewed / "review.geojson", truth, mpp=0.25, hit_um=10, far_um=20)
    got = {f["id"]: (f["properties"]["review"], f["properties"]["classification"]["name"], f["properties"]["rejected_as"])
           for f in doc["features"]}
    assert got == {"cell-6": ("confirmed", "HSIL", None), "cell-4": ("corrected", "NILM", None),
                   "cell-5": ("rejected", "Rejected", "not_annotated"), "cell-7": ("pending", "HSIL", None)}
    assert doc["slide"] == json.loads((reviewed / "review.geojson").read_text())["slide"]
    path = simulate_review_file(reviewed / "review.geojson", truth, 0.25, tmp_path / "simulated.geojson")
    assert main(["data", "build", "--out", str(tmp_path / "set"), "--slide", str(field_slide), "--annotations",
                 str(path), "--patch-size", "64", "--target-mpp", "0.5", "--no-progress"]) == 0
    assert ("1 confirmed + 1 corrected cells as labelled boxes (1 of a class the set does not annotate, e.g. NILM: "
            "hard negatives instead), 1 rejected calls") in capsys.readouterr().out
    coco = json.loads((tmp_path / "set" / "annotations.json").read_text())
    assert _whole_boxes(coco, "HSIL") and not _whole_boxes(coco, "NILM") and not _whole_boxes(coco, "LSIL")
    assert {im.get("rejected_as") for im in coco["images"]} >= {"reviewed as NILM", "not_annotated"}


def test_review_cells_setting_sizes_the_page_and_a_bad_value_is_refused(tmp_path, reviewed, capsys):
    # CELLS flags 4 cells at the default (3 counted abnormal + 1 suspicious below threshold)
    out = tmp_path / "small"
    out.mkdir()
    shutil.copy(reviewed / "detections.parquet", out / "detections.parquet")
    write_report(out / "detections.parquet", out, ReportConfig(review_cells=0), TAX)
    flagged = json.loads((out / "review.geojson").read_text())["features"]
    assert len(flagged) == 3  # counted abnormal cells are always flagged; the suspicious extra one is not
    config = tmp_path / "review.yaml"
    config.write_text("report:\n  review_cells: -1\n")
    capsys.readouterr()
    assert main(["review", str(out), "--rebuild", "--config", str(config), "--no-open"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "review_cells" in err[0]
    config.write_text("report:\n  review_cells: 60\n")
    assert main(["review", str(out), "--rebuild", "--config", str(config), "--no-open"]) == 0
    assert len(json.loads((out / "review.geojson").read_text())["features"]) == 4


def test_review_file_is_what_qupaths_geojson_reader_takes(reviewed):
    """QuPath (File > Import objects, `PathObjectTypeAdapters.read`, v0.4+) makes one object per feature from a
    closed Polygon, `properties.objectType` (annotation), `classification` {name, [r, g, b]} and a `measurements`
    map of numbers (a null there breaks its Map<String, Double>); other properties are ignored."""
    import geojson
    from shapely.geometry import shape

    doc = json.loads((reviewed / "review.geojson").read_text())
    assert geojson.loads(json.dumps(doc)).is_valid
    for f in doc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and shape(f["geometry"]).area > 0
        p = f["properties"]
        assert p["objectType"] == "annotation"
        c = p["classification"]
        assert isinstance(c["name"], str) and c["name"] and len(c["color"]) == 3 and all(isinstance(v, int) for v in c["color"])
        m = p["measurements"]
        assert m["Model score"] == p["model_score"] and all(isinstance(v, float) for v in m.values())
    # a cell with nucleus measures carries them under the cell export's QuPath names, numbers only
    from wsi_pipeline.export.review import FlaggedCell, fresh_document

    cell = FlaggedCell(1, (10, 10, 60, 60), "HSIL", 0.9, True, "HSIL", 0.9,
                       nucleus={"found": True, "area_um2": 80.5, "ratio_to_nilm_median": None, "nc_ratio": 0.42})
    m = fresh_document([cell], TAX, "s", "f" * 64)["features"][0]["properties"]["measurements"]
    assert m == {"Model score": 0.9, "Nucleus: Area µm^2": 80.5, "Nucleus/Cell area ratio": 0.42}
