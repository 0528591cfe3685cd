"""benchmarks/end_to_end.py: the large real-field slide it builds, and its stage table from a real `wsi-run`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from benchmark_helpers import load_benchmark
from wsi_pipeline.benchmarking import images
from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import mirrored_tiling

e2e = load_benchmark("end_to_end")


def test_mirrored_tiling_has_no_seams():
    field = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    read = mirrored_tiling(field)
    tile = read(0, 0, 230, 130)
    assert tile.shape == (130, 230, 3)
    assert np.array_equal(tile[:30, :50], field)
    assert np.array_equal(tile[:30, 50:100], field[:, ::-1]) and np.array_equal(tile[30:60, :50], field[::-1])
    assert np.array_equal(tile[:30, 100:150], field)  # the period is two mirrored copies
    assert np.array_equal(read(37, 11, 20, 20), tile[11:31, 37:57])  # any window reads the same pixels


def test_the_field_is_resampled_to_the_slides_pixel_size(cytology_dir):
    original = cv2.imread(str(cytology_dir / "lbc_field.jpg"))
    field = images.resampled_field()
    scale = images.LBC_FIELD_MPP / e2e.SLIDE_MPP
    assert field.shape == (round(original.shape[0] * scale), round(original.shape[1] * scale), 3)
    assert images.field_patches(3).shape == (3, 256, 256, 3)


@pytest.mark.slow
def test_end_to_end_runs_wsi_run_and_tables_its_stage_times(tmp_path, cytology_dir):
    slide = e2e.make_slide(1024, tmp_path)
    assert e2e.make_slide(1024, tmp_path) == slide  # cached
    with open_slide(slide) as s:
        assert s.dimensions == (1024, 1024) and s.mpp == (0.5, 0.5)
    out_json = tmp_path / "times.json"
    args = ["--size", "1024", "--device", "cpu", "--workers", "1", "--cache", str(tmp_path), "--baseline-patches", "8",
            "--json", str(out_json)]
    assert e2e.main(args) == 0
    first = json.loads(out_json.read_text())
    table = tmp_path / "out" / slide.stem / "detections.parquet"
    first_written = table.stat().st_mtime_ns
    assert e2e.main(args) == 0  # a second run measures again instead of reusing the finished stages
    times = json.loads(out_json.read_text())
    report = json.loads((tmp_path / "out" / slide.stem / "report.json").read_text())
    assert times["patches"] == first["patches"] == report["tiling"]["n_patches"] > 0
    # detected again (a new table), not taken from the first run; the time is not compared with the first
    # run's, which may include building the model's onnxruntime networks once
    assert table.stat().st_mtime_ns > first_written
    assert times["detection_s"] == report["timings"]["detection_s"] > 0
    assert times["tiling_s"] == report["timings"]["tiling_s"] > 0
    assert times["device"] == "cpu" and times["wall_s"] >= times["detection_s"] and times["model_alone_patches_per_s"] > 0
