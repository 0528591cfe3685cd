"""benchmarks/train_speed.py times each precision / memory-format variant and the data loader."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_helpers import load_benchmark

ROOT = Path(__file__).parents[1]


def test_variants_and_loader_are_timed(make_dataset, tmp_path, capsys):
    bench = load_benchmark("train_speed")
    data = make_dataset(tmp_path / "train", n_images=4)
    out = tmp_path / "speed.json"
    assert bench.main(["--config", str(ROOT / "configs" / "longtail.yaml"), "--device", "cpu", "--batch", "2",
                       "--iters", "1", "--warmup", "0", "--precisions", "fp32,fp16", "--formats", "nchw,channels_last",
                       "--size", "64", "--data", str(data), "--json", str(out), "--profile", "fp32", "--profile-rows", "3"]) == 0
    timings = json.loads(out.read_text())
    # fp16 is skipped on the CPU (training there is fp32 only); both memory formats are timed
    assert set(timings) == {"fp32/nchw", "fp32/channels_last", "loader/2_workers_images_per_s", "loader/8_workers_images_per_s"}
    assert all(v > 0 for v in timings.values())
    printed = capsys.readouterr().out
    assert "1.00x fp32 NCHW" in printed and "data loader, 2 workers" in printed
    assert "Self CPU" in printed  # the profile's table of the top operations


def test_random_batch_has_boxes_inside_the_image():
    bench = load_benchmark("train_speed")
    import torch

    images, targets = bench.random_batch(4, 128, 10, torch.device("cpu"))
    assert len(images) == 4 and images[0].shape == (3, 128, 128)
    for t in targets:
        boxes = t["boxes"]
        assert 1 <= len(boxes) <= 3 and (boxes[:, 2:] > boxes[:, :2]).all() and (boxes <= 128).all()
        assert ((t["labels"] >= 2) & (t["labels"] < 10)).all()
