"""benchmarks/longtail.py says "inconclusive" and prints no ratios when its focal baseline is weak."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from test_train import PATCH, make_dataset

ROOT = Path(__file__).parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("longtail_bench", ROOT / "benchmarks" / "longtail.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_is_inconclusive_and_prints_no_ratios(tmp_path, monkeypatch, capsys):
    bench = load_benchmark()
    train_data, test_data = make_dataset(tmp_path / "train", n_images=4), make_dataset(tmp_path / "test", n_images=3, seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "target_mpp": 1.0, "patch_size": PATCH, "device": "cpu", "log_loss_stats_every": 0,
        "model": {"detector": "fcos", "fpn_channels": 32, "anchor_sizes": [8, 16, 32, 64, 128]},
        "augment": {"enabled": False},
        "schedule": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.001, "warmup_iters": 1},
    }))
    monkeypatch.setitem(bench.PRESETS, "cpu", {**bench.PRESETS["cpu"], "config": str(config)})
    out = tmp_path / "bench"
    assert bench.main(["--losses", "focal,gradlibra_v2", "--seeds", "0", "--data", str(train_data),
                       "--test-data", str(test_data), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "inconclusive" in printed and "focal mAP" in printed
    assert "vs focal" not in printed and "x |" not in printed  # no ratio column, no "1.23x" cell
    result = json.loads((out / "results.json").read_text())
    assert result["inconclusive"].startswith("focal mAP")


def test_strong_focal_baseline_decides_and_reports_ratios():
    bench = load_benchmark()
    focal = {"map": (0.35, 0.01), "per_class_ap50": {"HSIL": (0.4, 0.0), "SCC": (0.0, 0.0)}}
    assert bench.inconclusive_reason({"focal": focal}, ["HSIL"]) is None
    assert "SCC" in bench.inconclusive_reason({"focal": focal}, ["HSIL", "SCC"])
    assert bench.inconclusive_reason({"bce": focal}, []) == "no focal baseline in this run"
