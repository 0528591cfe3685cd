"""Training-set extraction: real CRIC field + GeoJSON wrapped as a slide, and synthetic slides."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
from wsi_pipeline.synth import extract_dataset, generate_slide
from wsi_pipeline.datasets.slides import patch_boxes
from wsi_pipeline.datasets.annotations import Annotation
from wsi_pipeline.taxonomy import load_taxonomy

CRIC_ID = "4372f7114534a5e0b688673c15a43fa9"
CRIC_LABELS = {"Negative for intraepithelial lesion": "NILM", "ASC-US": "ASC-US", "LSIL": "LSIL"}


@pytest.fixture(scope="module")
def cric_slide(tmp_path_factory, cytology_dir):
    image = cv2.cvtColor(cv2.imread(str(cytology_dir / "cric" / f"{CRIC_ID}.webp")), cv2.COLOR_BGR2RGB)
    path = wrap_image_as_slide(image, tmp_path_factory.mktemp("cric") / f"{CRIC_ID}.svs", mpp=0.25)
    return path, cytology_dir / "cric" / f"{CRIC_ID}.geojson"


def _expected_cric_boxes(geojson: Path) -> list[tuple[tuple[float, ...], str]]:
    out = []
    for f in json.loads(geojson.read_text())["features"]:
        xs, ys = zip(*f["geometry"]["coordinates"][0])
        out.append(((min(xs), min(ys), max(xs), max(ys)), CRIC_LABELS[f["properties"]["label"]]))
    return out


@pytest.mark.parametrize("target_mpp", [0.25, 0.5])
def test_cric_field_boxes_and_classes(cric_slide, tmp_path, target_mpp):
    slide, geojson = cric_slide
    s = extract_dataset([(slide, geojson)], tmp_path, target_mpp=target_mpp, patch_size=256, background_ratio=100, progress=False)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    tax = load_taxonomy()
    assert [c["name"] for c in coco["categories"]] == tax.names and coco["categories"][0]["id"] == 1
    assert coco["info"]["target_mpp"] == target_mpp and coco["info"]["patch_size"] == 256
    scale = target_mpp / 0.25
    truth = _expected_cric_boxes(geojson)
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a["bbox"], tax.names[a["category_id"] - 1]))
    for img in coco["images"]:
        assert (tmp_path / "images" / img["file_name"]).is_file()
        ext = img["level0_size"]
        assert ext == 256 * scale
        # every annotation wholly inside this patch is there, with its class, shifted and scaled
        whole = [((b[0] - img["x"]) / scale, (b[1] - img["y"]) / scale, (b[2] - b[0]) / scale, (b[3] - b[1]) / scale, c)
                 for b, c in truth
                 if b[0] >= img["x"] and b[1] >= img["y"] and b[2] <= img["x"] + ext and b[3] <= img["y"] + ext]
        got = [(*bbox, c) for bbox, c in by_image.get(img["id"], [])]
        for w in whole:
            assert any(np.allclose(w[:4], g[:4], atol=0.01) and w[4] == g[4] for g in got), (img["file_name"], w)
        for g in got:  # clipped boxes stay inside the patch
            assert g[0] >= 0 and g[1] >= 0 and g[0] + g[2] <= 256 + 1e-6 and g[1] + g[3] <= 256 + 1e-6
    # the field's LSIL and ASC-US cells are all kept (rare), and the table counts what was written
    rare_truth = sum(1 for _, c in truth if c != "NILM")
    assert s.class_counts["LSIL"] + s.class_counts["ASC-US"] >= rare_truth
    assert sum(s.class_counts.values()) == len(coco["annotations"])


def test_patch_pixels_match_the_source(cric_slide, tmp_path, cytology_dir):
    slide, geojson = cric_slide
    extract_dataset([(slide, geojson)], tmp_path, target_mpp=0.25, patch_size=256, progress=False)
    img = json.loads((tmp_path / "annotations.json").read_text())["images"][0]
    patch = cv2.GaussianBlur(cv2.imread(str(tmp_path / "images" / img["file_name"])), (0, 0), 2).astype(int)
    field = cv2.GaussianBlur(cv2.imread(str(cytology_dir / "cric" / f"{CRIC_ID}.webp")), (0, 0), 2).astype(int)
    x, y = img["x"], img["y"]
    aligned = np.abs(patch - field[y : y + 256, x : x + 256]).mean()
    shifted = np.abs(patch - field[y + 6 : y + 262, x + 6 : x + 262]).mean()
    assert aligned < 3 and shifted > 2 * aligned  # two JPEG generations apart, but the same place


def test_synthetic_slide_rare_cells_all_whole_in_a_patch(tmp_path):
    s = generate_slide(tmp_path / "slide", 4096, seed=7, progress=False)
    out = tmp_path / "ds"
    summary = extract_dataset([(s.slide_path, s.geojson_path)], out, background_ratio=0.5, progress=False)
    coco = json.loads((out / "annotations.json").read_text())
    tax = load_taxonomy()
    images = {i["id"]: i for i in coco["images"]}
    scale = 0.5 / 0.25
    rare = [c for c in s.cells if c.class_name not in ("NILM", "INFL")]
    for cell in rare:  # each rare cell appears unclipped in some patch
        x0, y0, x1, y1 = cell.box
        found = False
        for a in coco["annotations"]:
            i = images[a["image_id"]]
            bx = (x0 - i["x"]) / scale, (y0 - i["y"]) / scale, (x1 - x0) / scale, (y1 - y0) / scale
            if tax.names[a["category_id"] - 1] == cell.class_name and np.allclose(a["bbox"], bx, atol=0.01):
                found = True
        assert found, cell
    assert summary.n_background_patches == min(round(0.5 * summary.n_rare_patches), summary.n_images)
    assert sum(1 for i in coco["images"] if not i["rare"]) == summary.n_background_patches
    with open(out / "class_counts.csv") as fh:
        rows = {r["class"]: int(r["instances"]) for r in csv.DictReader(fh)}
    assert rows == summary.class_counts and list(rows) == tax.names


def test_background_ratio_zero_keeps_only_rare_patches(tmp_path):
    s = generate_slide(tmp_path / "slide", 3000, seed=8, progress=False)
    summary = extract_dataset([(s.slide_path, s.coco_path)], tmp_path / "ds", background_ratio=0, progress=False)
    assert summary.n_background_patches == 0 and summary.n_images == summary.n_rare_patches > 0


def test_slivers_at_patch_borders_are_dropped():
    anns = [Annotation((90, 10, 130, 50), "HSIL"), Annotation((60, 60, 104, 80), "LSIL"), Annotation((0, 0, 20, 20), "NILM")]
    kept = patch_boxes(anns, 0, 0, 100, 1.0, 0.5, 6)
    assert [c for _, c in kept] == ["LSIL", "NILM"]
    assert kept[0][0] == (60.0, 60.0, 100.0, 80.0)  # clipped at the border


def test_bad_annotation_files_fail_with_one_line(cric_slide, tmp_path):
    slide, _ = cric_slide
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        extract_dataset([(slide, bad)], tmp_path / "ds", progress=False)
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"label": "LSIL"},
                   "geometry": {"type": "Polygon", "coordinates": [[[9e5, 9e5], [9e5 + 9, 9e5], [9e5 + 9, 9e5 + 9], [9e5, 9e5]]]}}]}))
    with pytest.raises(ArtifactError, match="no annotations inside the slide"):
        extract_dataset([(slide, far)], tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds" / "annotations.json").exists()


def test_cli_dataset_from_slide_and_geojson(cric_slide, tmp_path, capsys):
    slide, geojson = cric_slide
    rc = main(["synth", "dataset", "--out", str(tmp_path), "--slide", str(slide), "--annotations", str(geojson),
               "--patch-size", "256", "--target-mpp", "0.25"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "LSIL" in out and "instances" in out
    assert (tmp_path / "annotations.json").is_file() and (tmp_path / "class_counts.csv").is_file()
