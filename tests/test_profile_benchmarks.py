"""Scoring a settings profile: real_cells.py --config and cpu_tiles.py --also-config / --slide refuse what they
cannot measure before any run, and the profile's overrides reach every run they score."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_real_cells_refuses_a_wrong_settings_file_before_running(tmp_path, cytology_dir):
    bad = tmp_path / "profile.yaml"
    bad.write_text("tiling: {patch_size: -3}\n")
    done = run_script("real_cells", "--config", str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "patch_size" in done.stderr and str(bad) in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.slow
def test_cpu_tiles_also_config_needs_skip_fields(tmp_path):
    done = run_script("cpu_tiles", "--also-config", str(ROOT / "configs" / "fast_cpu.yaml"), "--out", str(tmp_path))
    assert done.returncode == 2 and "--skip-fields" in done.stderr
    assert not any(tmp_path.iterdir())


def test_real_cells_passes_the_profile_to_fields_tct_and_demo(monkeypatch, tmp_path):
    """score_model hands the profile's overrides to every run and scores with the profile's thresholds."""
    bench = load_benchmark("real_cells")
    seen: dict[str, object] = {}

    def fake_cric(model, out, taxonomy, thresholds, fields, overrides=None):
        seen["fields"], seen["thresholds"] = overrides, thresholds
        return {"hits": {}}

    def fake_tct(model, out, taxonomy, thresholds, overrides=None):
        seen["tct"] = overrides
        return {"a.JPG": {"counted_abnormal_outside": 2, "top_in_circle": True, "best_circle_rank": 1}}

    monkeypatch.setattr(bench, "cric_validation", fake_cric)
    monkeypatch.setattr(bench, "tct_marked", fake_tct)
    profile = {"report": {"score_threshold": 0.4}, "tiling": {"patch_size": 1024}}
    record = bench.score_model(Path("model.pt"), tmp_path, [], demo=False, overrides=profile)
    assert seen["fields"] == seen["tct"] == profile
    assert seen["thresholds"] and all(abs(v - 0.4) < 1e-9 for v in seen["thresholds"])
    assert record["tct_marked"]["top_in_circle"] == 1 and record["tct_marked"]["outside_mean"] == 2.0


def test_real_cells_labels_a_run_by_its_folder_also_outside_the_project():
    bench = load_benchmark("real_cells")
    record = {"model": "model.pt", "label": bench.model_label("/elsewhere/runs/starter_v3d/model.pt"),
              "cric_val": {"hits": {"abnormal_found": 1, "abnormal_total": 2, "abnormal_recall": 0.5, "nilm_flagged": 0,
                                    "nilm_total": 3, "nilm_flagged_fraction": 0.0, "high_grade_found": 0,
                                    "high_grade_total": 1, "high_grade_recall": 0.0},
                           "squamous_counted": 3, "squamous_annotated": 4},
              "tct_marked": {"top_in_circle": 1, "fields": 7, "outside_mean": 2.0}}
    row = bench.summary_table([record]).splitlines()[-1]
    assert row.startswith("| starter_v3d | 1/2 (0.50) |")
