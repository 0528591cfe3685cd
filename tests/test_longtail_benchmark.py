"""benchmarks/longtail.py says "inconclusive" and prints no ratios when its focal baseline is weak."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark_helpers import load_benchmark

PATCH = 64  # conftest make_dataset patches


def tiny_config(tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "target_mpp": 1.0, "patch_size": PATCH, "device": "cpu", "log_loss_stats_every": 0,
        "model": {"detector": "fcos", "fpn_channels": 32},
        "augment": {"enabled": False},
        "schedule": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.001, "warmup_iters": 1, "workers": 0},
    }))
    return config


def test_tiny_run_is_inconclusive_and_prints_no_ratios(make_dataset, tmp_path, monkeypatch, capsys):
    bench = load_benchmark("longtail")
    train_data, test_data = make_dataset(tmp_path / "train", n_images=4), make_dataset(tmp_path / "test", n_images=3, seed=1)
    monkeypatch.setitem(bench.PRESETS, "cpu", {**bench.PRESETS["cpu"], "config": str(tiny_config(tmp_path))})
    out = tmp_path / "bench"
    assert bench.main(["--losses", "focal,gradlibra_v2", "--seeds", "0", "--data", str(train_data),
                       "--test-data", str(test_data), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "inconclusive" in printed and "focal mAP" in printed
    assert "vs focal" not in printed and "x |" not in printed  # no ratio column, no "1.23x" cell
    result = json.loads((out / "results.json").read_text())
    assert result["inconclusive"].startswith("focal mAP")
    runs = {r["loss"]: r for r in result["runs"]}
    assert runs["focal"]["statistics_moved"] is None  # focal has no per-class statistics
    assert len(runs["gradlibra_v2"]["statistics"]["beta"]) == 10 and runs["gradlibra_v2"]["statistics_moved"] in (True, False)


@pytest.mark.slow
def test_jobs_train_runs_in_parallel_processes_like_one_process(make_dataset, tmp_path, capsys):
    """--jobs 2 trains each run in its own process (same result as in-process: same seed, same batches),
    --time-iters times the jobs together, and --summary-only tables the seeds every loss finished."""
    bench = load_benchmark("longtail")
    train_data, test_data = make_dataset(tmp_path / "train", n_images=4), make_dataset(tmp_path / "test", n_images=3, seed=1)
    common = ["--config", str(tiny_config(tmp_path)), "--data", str(train_data), "--test-data", str(test_data),
              "--no-progress", "--threads", "1"]
    parallel, single = tmp_path / "parallel", tmp_path / "single"
    assert bench.main([*common, "--losses", "focal,bce", "--seeds", "0,1", "--out", str(parallel), "--jobs", "2"]) == 0
    result = json.loads((parallel / "results.json").read_text())
    assert result["complete_seeds"] == [0, 1] and len(result["runs"]) == 4 and not result["missing"]
    assert all((parallel / "runs" / f"{loss}_seed{s}.log").is_file() for loss in ("focal", "bce") for s in (0, 1))

    assert bench.main([*common, "--losses", "focal", "--seeds", "1", "--out", str(single)]) == 0
    one = json.loads((single / "runs" / "focal_seed1" / "result.json").read_text())
    other = json.loads((parallel / "runs" / "focal_seed1" / "result.json").read_text())
    assert one["final_loss"] == pytest.approx(other["final_loss"], rel=1e-5)

    (parallel / "runs" / "bce_seed1" / "result.json").unlink()
    capsys.readouterr()
    assert bench.main([*common, "--losses", "focal,bce", "--seeds", "0,1", "--out", str(parallel), "--summary-only"]) == 0
    summary = json.loads((parallel / "results.json").read_text())
    assert summary["complete_seeds"] == [0] and summary["missing"] == ["bce seed 1"]
    assert summary["summary"]["focal"]["seeds"] == [0, 1] and summary["summary"]["bce"]["seeds"] == [0]
    assert not (parallel / "runs" / "bce_seed1" / "result.json").exists()  # nothing was trained

    assert bench.main([*common, "--losses", "focal,bce", "--out", str(tmp_path / "timed"), "--jobs", "2",
                       "--time-iters", "2"]) == 0
    assert "2 at a time" in capsys.readouterr().out
    assert all((tmp_path / "timed" / f"timing{slot}" / "timing.json").is_file() for slot in (0, 1))


def test_recipe_and_unknown_loss(tmp_path):
    bench = load_benchmark("longtail")
    over = bench.run_overrides("efl_official", {"seed": 3}, batch_size=32)
    assert over["loss"]["name"] == "efl" and over["model"]["prior_prob"] == 0.001 and over["seed"] == 3
    assert over["schedule"]["lr"] == 0.04 and over["schedule"]["decay_bias_and_norm"] is True
    assert bench.run_overrides("eqlv2", {}, batch_size=8) == {"loss": {"name": "eqlv2"}}
    with pytest.raises(SystemExit):
        bench.main(["--losses", "focal,nonsense", "--out", str(tmp_path)])


def test_paired_bootstrap_interval_covers_the_mean_and_needs_two_seeds():
    bench = load_benchmark("longtail")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.3, size=5)
    records = [{"loss": "bce", "seed": s, "rare_map": float(base[s])} for s in range(5)]
    records += [{"loss": "gradlibra_v2", "seed": s, "rare_map": float(base[s] + 0.05 + 0.01 * (s - 2))} for s in range(5)]
    mean, low, high = bench.paired_delta(records, "gradlibra_v2", "bce")
    assert mean == pytest.approx(0.05)
    assert 0.035 <= low < mean < high <= 0.065  # the seed effect (base) cancels in the pairing
    assert bench.paired_delta(records[:1] + records[5:6], "gradlibra_v2", "bce") is None


def test_statistics_moved_reads_beta_of_rare_classes():
    bench = load_benchmark("longtail")
    names = ["A", "B", "C"]
    assert bench.statistics_moved({}, names, ["C"]) == (None, None)
    assert bench.statistics_moved({"pos_neg": [1.0, 1.0, 1.0]}, names, ["C"]) == (False, 1.0)
    assert bench.statistics_moved({"pos_neg": [9.0, 1.0, 0.2], "beta": [1.0, 1.0, 0.5]}, names, ["C"]) == (True, 0.5)


def test_strong_focal_baseline_decides_and_reports_deltas():
    bench = load_benchmark("longtail")
    rs = []
    for s in range(3):
        for loss, value in (("bce", 0.30), ("focal", 0.32), ("eqlv2", 0.36)):
            rs.append({"loss": loss, "seed": s, "map50_95": 0.4, "map50": 0.6, "rare_map": value + 0.01 * s,
                       "rare_map50": 0.5, "train_seconds": 10.0, "per_class_ap": {"HSIL": value}, "per_class_ap50": {"HSIL": 0.5},
                       "statistics_moved": True if loss == "eqlv2" else None, "lowest_rare_statistic": 0.3 if loss == "eqlv2" else None})
    summary = bench.summarise(rs, ["bce", "focal", "eqlv2"], ["HSIL"])
    table = bench.markdown(summary, ["HSIL"], {"HSIL": 120}, ["HSIL"], "header")
    assert "inconclusive" not in table
    assert "| eqlv2 | 0.400 ± 0.000 | 0.370 ± 0.010 | +0.060 [+0.060, +0.060] | +0.040 [+0.040, +0.040] |" in table
    assert "3/3 (lowest 0.30)" in table


def test_strong_focal_baseline_decides():
    bench = load_benchmark("longtail")
    focal = {"map": (0.35, 0.01), "per_class_ap50": {"HSIL": (0.4, 0.0), "SCC": (0.0, 0.0)}}
    assert bench.inconclusive_reason({"focal": focal}, ["HSIL"]) is None
    assert "SCC" in bench.inconclusive_reason({"focal": focal}, ["HSIL", "SCC"])
    assert bench.inconclusive_reason({"bce": focal}, []) == "no focal baseline in this run"
