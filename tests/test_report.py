"""``write_report`` and ``wsi report`` end to end on small real slides with hand-made detections."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import ReportConfig
from wsi_pipeline.errors import ArtifactError, SlideError
from wsi_pipeline.export import filter_scanner_properties, write_report
from wsi_pipeline.io import open_slide

from report_helpers import CELLS, TAX, make_detections

OUTPUTS = ["report.json", "report.html", "cells.geojson", "cells.xml", "cells.csv"]
IMG_TAG = re.compile(r"<img\b[^>]*>")
ATTR = re.compile(r'([\w-]+)="([^"]*)"')

@pytest.fixture()
def detections(tmp_path, field_info) -> Path:
    return make_detections(tmp_path / "detections.parquet", CELLS, field_info)


def embedded_images(html: str) -> list[tuple[dict[str, str], np.ndarray]]:
    """Every <img> of the page with its attributes and decoded RGB pixels."""
    out = []
    for tag in IMG_TAG.findall(html):
        attrs = dict(ATTR.findall(tag))
        assert attrs["src"].startswith("data:image/"), "every picture must be embedded"
        raw = base64.b64decode(attrs["src"].split(",", 1)[1])
        pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        out.append((attrs, cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)))
    return out


def test_report_files_and_json_content(tmp_path, detections, field_slide):
    paths = write_report(detections, tmp_path / "out", ReportConfig(), TAX)  # stage times come from the artifacts
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).is_file()
    assert not list((tmp_path / "out").glob("*.tmp"))
    report = json.loads(paths.json.read_text())
    assert report["schema"] == "wsi_pipeline.report" and report["version"] == 1
    assert report["category"]["name"] == "HSIL" and report["category"]["organisms"] == []  # TRICH needs 2 cells
    assert report["n_detections"] == 9 and report["n_cells_counted"] == 7
    counts = {c["name"]: c["n_counted"] for c in report["classes"]}
    assert counts["NILM"] == 2 and counts["LSIL"] == 2 and counts["HSIL"] == 1 and counts["TRICH"] == 1
    assert {c["name"]: c["density_per_mm2"] for c in report["classes"]}["LSIL"] == pytest.approx(8.0)
    assert report["adequacy"]["status"] == "limited" and report["adequacy"]["squamous_cells"] == 5
    assert 0 < report["suspicion_score"] <= 1
    top = {(c["class"], c["rank"]): c for c in report["top_cells"]}
    assert top[("HSIL", 1)]["center"] == [1000.0, 512.0] and top[("LSIL", 1)]["score"] == pytest.approx(0.88)
    assert report["timings"]["tiling_s"] == 3.5 and report["timings"]["detection_s"] == 12.5
    assert report["timings"]["report_s"] >= 0
    assert report["slide"]["pixels_available"] and report["slide"]["fingerprint"]
    assert report["model"]["file"] == "tct_retinanet.pt" and "path" not in report["model"]
    assert report["tiling"]["patch_size"] == 512 and "path" not in report["tiling"]
    geo = json.loads(paths.geojson.read_text())
    assert len(geo["features"]) == 7  # the same cells as the counts


def test_gallery_crops_equal_slide_pixels(tmp_path, detections, field_slide):
    paths = write_report(detections, tmp_path, ReportConfig(crop_format="png", crop_size_um=32.0), TAX)
    crops = [(a, px) for a, px in embedded_images(paths.html.read_text()) if "data-x" in a]
    assert {a["data-class"] for a, _ in crops} == {"LSIL", "HSIL"}  # abnormal classes only; TRICH is an organism
    reference = openslide.OpenSlide(str(field_slide))  # an independent reader
    for attrs, pixels in crops:
        x, y, size = int(attrs["data-x"]), int(attrs["data-y"]), int(attrs["data-size"])
        assert pixels.shape == (size, size, 3) and size == 128  # 32 um at 0.25 um/px, full resolution
        expected = np.asarray(reference.read_region((x, y), 0, (size, size)))[..., :3]
        np.testing.assert_array_equal(pixels, expected)
    hsil = next(a for a, _ in crops if a["data-class"] == "HSIL")
    assert (int(hsil["data-x"]), int(hsil["data-y"])) == (1000 - 64, 512 - 64)  # centred on the cell


def test_jpeg_crops_are_close_to_slide_pixels(tmp_path, detections, field_slide):
    paths = write_report(detections, tmp_path, ReportConfig(), TAX)
    reference = openslide.OpenSlide(str(field_slide))
    for attrs, pixels in embedded_images(paths.html.read_text()):
        if "data-x" in attrs:
            x, y, size = int(attrs["data-x"]), int(attrs["data-y"]), int(attrs["data-size"])
            expected = np.asarray(reference.read_region((x, y), 0, (size, size)))[..., :3]
            assert cv2.PSNR(pixels, expected) > 32


def test_thumbnail_is_the_slide_and_overlays_are_separate(tmp_path, detections, field_slide):
    paths = write_report(detections, tmp_path, ReportConfig(thumbnail_max_px=384), TAX)
    images = embedded_images(paths.html.read_text())
    thumb = next(px for a, px in images if a.get("id") == "thumbnail")
    assert thumb.shape == (256, 384, 3)
    full = np.asarray(openslide.OpenSlide(str(field_slide)).read_region((0, 0), 0, (1536, 1024)))[..., :3]
    assert np.abs(cv2.resize(full, (384, 256), interpolation=cv2.INTER_AREA).astype(int) - thumb).mean() < 4
    heat = next(a for a, _ in images if a.get("id") == "heatmap")
    raw = cv2.imdecode(np.frombuffer(base64.b64decode(heat["src"].split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (256, 384, 4) and raw[..., 3].any() and not raw[..., 3].all()  # squares where abnormal cells are


def test_label_and_macro_never_reach_any_output(tmp_path, slides_dir):
    svs = slides_dir / "cmu-1-small-region.svs"
    reference = openslide.OpenSlide(str(svs))
    assert {"label", "macro"} <= set(reference.associated_images)
    with open_slide(svs) as slide:
        info = slide.info().to_dict()
    cells = [("HSIL", 0.9, 1100, 1500, 40), ("ASC-US", 0.8, 500, 700, 40), ("ASC-US", 0.7, 1800, 2500, 40),
             ("NILM", 0.9, 300, 300, 50)]
    det = make_detections(tmp_path / "detections.parquet", cells, info)
    paths = write_report(det, tmp_path / "out", ReportConfig(thumbnail_max_px=400), TAX)

    texts = {name: (tmp_path / "out" / name).read_text() for name in OUTPUTS}
    private = ["CPAPERIOCS", "b414003d-95c6-48b0-9369-8010ed517ba7", "12/29/09", "09:59:15", "Filename", "1004486"]
    for name, text in texts.items():
        for value in private:  # scanner id, user, date, time, file name and image id of the scan
            assert value not in text, f"{value} leaked into {name}"
    props = json.loads(texts["report.json"])["slide"]["scanner_properties"]
    assert props and not any(re.search("label|macro|user|date|time|comment|description", k, re.I) for k in props)

    associated = {k: np.asarray(reference.associated_images[k].convert("RGB")) for k in ("label", "macro")}
    images = embedded_images(texts["report.html"])
    assert len(images) >= 3 + 3  # thumbnail twice, overlay, heat map, three crops
    for attrs, pixels in images:
        for name, assoc in associated.items():
            same = cv2.resize(assoc, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_AREA)
            assert np.abs(same.astype(int) - pixels).mean() > 25, f"{attrs.get('alt')} looks like the {name} image"
    thumb = next(px for a, px in images if a.get("id") == "thumbnail")
    level0 = np.asarray(reference.read_region((0, 0), 0, reference.dimensions))[..., :3]
    small = cv2.resize(level0, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - thumb).mean() < 6  # the pyramid's own pixels
    assert paths.html.stat().st_size < 3_000_000


def test_filter_scanner_properties_drops_private_fields():
    props = {"aperio.MPP": "0.25", "aperio.Barcode": "X", "hamamatsu.SlideLabel": "Y", "PatientName": "Z",
             "aperio.ScanScope ID": "S", "openslide.vendor": "aperio", "tiff.ImageDescription": "a|b",
             "openslide.associated.label.width": "387", "dicom.StudyDate": "20240101", "aperio.AppMag": "20"}
    assert filter_scanner_properties(props) == {"aperio.AppMag": "20", "aperio.MPP": "0.25", "openslide.vendor": "aperio"}


def test_missing_slide_still_gives_a_report_that_says_so(tmp_path, field_info):
    info = {**field_info, "path": str(tmp_path / "gone.svs")}
    det = make_detections(tmp_path / "detections.parquet", CELLS, info)
    paths = write_report(det, tmp_path / "out", ReportConfig(), TAX)
    report = json.loads(paths.json.read_text())
    assert not report["slide"]["pixels_available"] and "was not found" in report["slide"]["note"]
    assert report["category"]["name"] == "HSIL" and report["top_cells"]
    html = paths.html.read_text()
    assert 'id="slide-note"' in html and "data-x=" not in html


def test_changed_slide_file_is_not_used_for_pixels(tmp_path, field_info, slides_dir):
    det = make_detections(tmp_path / "detections.parquet", CELLS, field_info)
    paths = write_report(det, tmp_path / "out", ReportConfig(), TAX, slide_path=slides_dir / "cmu-1-small-region.svs")
    report = json.loads(paths.json.read_text())
    assert not report["slide"]["pixels_available"] and "fingerprint differs" in report["slide"]["note"]


def test_explicit_missing_slide_is_an_error(tmp_path, detections):
    with pytest.raises(SlideError, match="slide file not found"):
        write_report(detections, tmp_path / "out", ReportConfig(), TAX, slide_path=tmp_path / "nope.svs")
    assert not (tmp_path / "out" / "report.json").exists()


def test_incomplete_detections_leave_no_complete_report(tmp_path, detections, field_info):
    out = tmp_path / "out"
    write_report(detections, out, ReportConfig(), TAX)
    assert (out / "report.json").is_file()
    make_detections(detections, CELLS, field_info, complete=False)  # a rerun of detection died half-way
    with pytest.raises(ArtifactError, match="incomplete"):
        write_report(detections, out, ReportConfig(), TAX)
    assert not (out / "report.json").exists()  # the stale marker is gone


def test_other_taxonomy_is_refused(tmp_path, detections):
    other = TAX.from_dict({"classes": [{"name": "A"}, {"name": "B"}]})
    with pytest.raises(ArtifactError, match="different taxonomy"):
        write_report(detections, tmp_path / "out", ReportConfig(), other)


def test_cli_report_and_one_line_errors(tmp_path, detections, capsys):
    out = tmp_path / "cli"
    assert main(["report", str(detections), "--out", str(out), "-q"]) == 0
    assert json.loads((out / "report.json").read_text())["category"]["name"] == "HSIL"
    assert main(["report", str(tmp_path / "missing.parquet"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.parquet" in err and "\n" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("report:\n  crop_format: tiff\n")
    assert main(["report", str(detections), "--out", str(out), "--config", str(bad)]) == 2  # a configuration error is a usage error
    assert "report.crop_format must be jpeg or png" in capsys.readouterr().err


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--slide" in text and "cells.geojson" in text
