"""Synthetic slides: determinism, readability, ground truth on drawn cells, configured class mix."""

from __future__ import annotations

import json

import numpy as np
import openslide
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.io import open_slide
from wsi_pipeline.synth import generate_slide
from wsi_pipeline.synth.cells import GLASS_RGB
from wsi_pipeline.synth.composite import CropBank, paste_crops
from wsi_pipeline.synth.config import load_synth_config
from wsi_pipeline.synth.layout import class_counts
from wsi_pipeline.taxonomy import load_taxonomy

SIZE = 2048
GLASS_GREY = float(GLASS_RGB.mean())


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return generate_slide(tmp_path_factory.mktemp("synth"), SIZE, seed=3, progress=False)


def _ground_truth_bytes(s):
    return [p.read_bytes() for p in (s.geojson_path, s.coco_path, s.truth_path)]


def test_same_seed_same_ground_truth_bytes(slide, tmp_path):
    again = generate_slide(tmp_path / "a", SIZE, seed=3, progress=False)
    other = generate_slide(tmp_path / "b", SIZE, seed=4, progress=False)
    assert _ground_truth_bytes(again) == _ground_truth_bytes(slide)
    assert again.slide_path.read_bytes() == slide.slide_path.read_bytes()
    assert [c.box for c in other.cells] != [c.box for c in slide.cells]


def test_openslide_and_project_reader_agree(slide):
    o = openslide.OpenSlide(str(slide.slide_path))
    try:
        assert o.properties["openslide.vendor"] == "aperio"
        with open_slide(slide.slide_path) as s:
            assert s.dimensions == o.dimensions == (SIZE, SIZE)
            assert s.level_dimensions == list(o.level_dimensions)
            assert s.mpp[0] == pytest.approx(float(o.properties["openslide.mpp-x"])) == pytest.approx(0.25)
            # same pixels up to JPEG decoder differences
            a = s.read_region(0, 900, 900, 256, 256).astype(int)
            b = np.asarray(o.read_region((900, 900), 0, (256, 256)).convert("RGB")).astype(int)
            assert np.abs(a - b).mean() < 2
    finally:
        o.close()


def test_every_box_inside_the_slide_and_on_a_drawn_cell(slide):
    with open_slide(slide.slide_path) as s:
        for cell in slide.cells:
            x0, y0, x1, y1 = cell.box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, cell
            grey = s.read_region(0, x0, y0, x1 - x0, y1 - y0).mean(axis=2)
            assert np.percentile(grey, 5) < GLASS_GREY - 25, f"{cell.class_name} box {cell.box} is blank glass"
        # far corner of the slide (outside the preparation circle) is bright glass
        assert s.read_region(0, 0, 0, 64, 64).mean() > GLASS_GREY - 8


def test_class_counts_follow_the_config(slide):
    tax = load_taxonomy()
    truth = json.loads(slide.truth_path.read_text())
    expected = class_counts(truth["preparation"]["area_mm2"], load_synth_config().slide, tax.names)
    assert truth["counts"] == expected == slide.counts
    coco = json.loads(slide.coco_path.read_text())
    from_coco = {n: 0 for n in tax.names}
    for a in coco["annotations"]:
        from_coco[tax.names[a["category_id"] - 1]] += 1
    assert from_coco == expected
    present = [c for c in tax.classes if c.abnormal and expected[c.name] > 0]
    assert present and truth["abnormal"] is True
    assert tax[truth["most_severe"]].severity == max(c.severity for c in present)
    assert expected["INFL"] > expected["NILM"] > expected["ASC-US"] >= expected["HSIL"]


def test_larger_slide_scales_with_area():
    cfg = load_synth_config().slide
    small, full = class_counts(0.1, cfg, ["NILM", "HSIL"]), class_counts(314.0, cfg, ["NILM", "HSIL"])
    assert small == {"NILM": cfg.min_count["NILM"], "HSIL": cfg.min_count["HSIL"]}
    for name in ("NILM", "HSIL"):  # max(min_count, density x area), whatever the configured numbers are
        assert full[name] == max(cfg.min_count.get(name, 0), round(cfg.density_per_mm2[name] * 314.0)) >= small[name]
    assert full["NILM"] > full["HSIL"]


def test_geojson_is_qupath_shaped(slide):
    fc = json.loads(slide.geojson_path.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(slide.cells)
    f = fc["features"][0]
    assert f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"][0]) == 5
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] == slide.cells[0].class_name
    assert len(f["properties"]["classification"]["color"]) == 3


def test_composited_slide_pastes_real_crops(tmp_path, cytology_dir):
    s = generate_slide(tmp_path, SIZE, seed=5, crops_dir=cytology_dir / "cell_crops", progress=False)
    pasted = [c for c in s.cells if c.crop]
    assert pasted and all(c.class_name not in ("NILM", "INFL") for c in pasted)
    assert {c.class_name for c in pasted} >= {"HSIL", "LSIL", "ASC-US"}
    with open_slide(s.slide_path) as sl:
        for c in pasted:
            x0, y0, x1, y1 = c.box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert np.percentile(sl.read_region(0, x0, y0, x1 - x0, y1 - y0).mean(axis=2), 5) < GLASS_GREY - 25


def test_copy_paste_augmentation_records_boxes(cytology_dir):
    bank = CropBank.load(cytology_dir / "cell_crops", load_synth_config().composite)
    assert "HSIL" in bank.crops and "CAND" in bank.crops and len(bank.crops) == 8
    background = np.full((512, 512, 3), 245, np.uint8)
    out, boxes = paste_crops(background, 0.5, bank, 4, np.random.default_rng(0), classes=["HSIL"])
    assert len(boxes) == 4 and all(c == "HSIL" for _, c in boxes)
    for (x0, y0, x1, y1), _ in boxes:
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
        assert out[y0:y1, x0:x1].mean() < 235
    assert (out == 245).mean() > 0.3  # only the pasted areas changed


def test_bad_synth_config_is_one_line_error(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("slide:\n  min_count: {HSILL: 3}\n")
    with pytest.raises(ConfigError, match="unknown class 'HSILL'"):
        load_synth_config(f)
    with pytest.raises(ConfigError, match="crops folder not found"):
        generate_slide(tmp_path, SIZE, crops_dir=tmp_path / "missing", progress=False)


def test_cli_writes_slide_and_rejects_bad_size(tmp_path, capsys):
    assert main(["synth", "slide", "--out", str(tmp_path), "--size", "1500", "--seed", "1", "--name", "demo"]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"demo.svs", "demo.cells.geojson", "demo.coco.json", "demo.truth.json"}
    assert "most severe" in capsys.readouterr().out
    assert main(["synth", "slide", "--out", str(tmp_path), "--size", "10"]) == 2
    assert "--size must be between" in capsys.readouterr().err
