"""benchmarks/end_to_end.py: the large real-field slide it builds, and its stage table from a real `wsi-run`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from benchmark_helpers import load_benchmark
from wsi_pipeline.io import open_slide

e2e = load_benchmark("end_to_end")


def test_tile_source_mirrors_the_resampled_field_without_seams():
    field = np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)
    read = e2e.field_tile_source(field, field_mpp=0.25, slide_mpp=0.5)  # half size: 30 x 50
    tile = read(0, 0, 230, 130)
    assert tile.shape == (130, 230, 3)
    small = tile[:30, :50]
    assert np.array_equal(small, cv2.resize(field, (50, 30), interpolation=cv2.INTER_AREA))
    assert np.array_equal(tile[:30, 50:100], small[:, ::-1]) and np.array_equal(tile[30:60, :50], small[::-1])
    assert np.array_equal(tile[:30, 100:150], small)  # the period is two mirrored copies
    assert np.array_equal(read(37, 11, 20, 20), tile[11:31, 37:57])  # any window reads the same pixels


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
    assert e2e.main(args) == 0  # a second run measures again instead of reusing the finished stages
    times = json.loads(out_json.read_text())
    report = json.loads((tmp_path / "out" / slide.stem / "report.json").read_text())
    assert times["patches"] == first["patches"] == report["tiling"]["n_patches"] > 0
    assert times["detection_s"] == report["timings"]["detection_s"] > 0.5 * first["detection_s"]
    assert times["tiling_s"] == report["timings"]["tiling_s"] > 0
    assert times["device"] == "cpu" and times["wall_s"] >= times["detection_s"] and times["model_alone_patches_per_s"] > 0
