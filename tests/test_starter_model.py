"""The bundled starter model: it loads (fp16 weights, model card), `wsi-run` uses it without --model on a
mosaic of real CRIC validation fields and counts NILM and abnormal cells, and the demo pastes held-out real crops and trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wsi_pipeline.cli.main import main as wsi_main
from wsi_pipeline.cli.run import main as run_main
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import load_checkpoint, read_checkpoint_file
from wsi_pipeline.taxonomy import load_taxonomy


def test_starter_model_loads_with_its_card():
    path = starter_model_path()
    assert path.stat().st_size <= 25e6
    payload = read_checkpoint_file(path)
    assert "training_state" not in payload
    assert {v.dtype for v in payload["model"].values() if v.is_floating_point()} == {torch.float16}
    loaded = load_checkpoint(path)
    meta = loaded.meta
    assert meta["architecture"]["backbone"] == "efficientnet_lite0" and meta["architecture"]["detector"] == "fcos"
    assert meta["target_mpp"] == 0.5 and meta["taxonomy"] == load_taxonomy().names
    card = meta["model_card"]
    assert "research use" in card["intended_use"].lower() and card["validation"]
    assert next(loaded.detector.parameters()).dtype == torch.float32  # fp16 on disk, fp32 to run
    out = loaded.detector.predict(torch.zeros(1, 256, 256, 3, dtype=torch.uint8), score_threshold=0.0)
    assert out[0]["class_scores"].shape[1] == len(meta["taxonomy"])


def test_starter_models_spec_rebuilds_a_network_with_the_same_predictions():
    """The bundled checkpoint's spec carries the FCOS params (head depth 2): a model rebuilt from the spec
    alone predicts exactly the same (flat specs of older checkpoints: tests/test_spec.py)."""
    from wsi_pipeline.models.detector import DetectorSpec, build_detector
    from wsi_pipeline.models.fcos import FCOSParams
    from wsi_pipeline.models.losses import build_loss

    path = starter_model_path()
    payload = read_checkpoint_file(path)
    loaded = load_checkpoint(path)  # strict state-dict load: head_convs must have reached the network
    spec = loaded.detector.spec
    assert spec.head == FCOSParams(center_sampling_radius=1.5, head_convs=2)
    assert len(loaded.detector.model.head.classification_head.conv) == 2 * 3

    rebuilt = build_detector(DetectorSpec.from_dict(spec.to_dict()), build_loss(payload["meta"]["loss"]["name"], 10))
    rebuilt.load_state_dict(loaded.detector.state_dict())
    images = (torch.rand(2, 256, 256, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    expected, got = loaded.detector.predict(images, 0.0), rebuilt.predict(images, 0.0)
    assert all(len(a["boxes"]) > 0 for a in expected)
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wsi_model_info_shows_the_bundled_model(capsys):
    assert wsi_main(["model", "info"]) == 0
    printed = capsys.readouterr().out
    assert "efficientnet_lite0" in printed and "0.5 um/px" in printed and "float16" in printed
    meta = load_checkpoint(starter_model_path()).meta
    training, card = meta["training"], meta["model_card"]
    assert f"{training['epochs']} epochs, {training['iterations']:,} iterations" in printed
    if training.get("metrics"):  # trained with a validation set (v3 was scored by benchmarks/real_cells.py instead)
        assert f"mAP50 {training['metrics']['map50']:.3f}" in printed
    assert f"loss:       {meta['loss']['name']}" in printed
    for name, value in card["validation"].items():  # every validation line in full, not cut off
        assert f"  {name}: {value}\n" in printed

    assert wsi_main(["model", "info", "--json"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["training"]["config"]["model"]["backbone"] == "efficientnet_lite0"
    assert dumped["model_card"] == card


VAL_MOSAIC_FIELDS = ("1a577755", "5b7cc4b7")  # validation side of configs/splits/cric.csv: never trained on


@pytest.mark.slow
def test_wsi_run_without_model_reports_nilm_and_abnormal_cells_on_a_cric_mosaic(tmp_path, cytology_dir):
    """Two real CRIC validation fields side by side (22 annotated abnormal and 25 NILM nuclei), given as an
    image with its pixel size: the default model counts squamous NILM cells and at least one abnormal cell."""
    from wsi_pipeline.datasets.split import read_split

    split = read_split(Path(__file__).parents[1] / "configs" / "splits" / "cric.csv")
    fields = [next((cytology_dir / "cric_fields").glob(f"{stem}*.jpg")) for stem in VAL_MOSAIC_FIELDS]
    assert all(split.side(f) == "val" for f in fields)
    images = [cv2.imread(str(f)) for f in fields]
    height = max(im.shape[0] for im in images)  # fields differ by a few px: pad with white
    mosaic = np.hstack([cv2.copyMakeBorder(im, 0, height - im.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
                        for im in images])
    image = tmp_path / "cric_mosaic.png"
    cv2.imwrite(str(image), mosaic)
    config = tmp_path / "smear.yaml"
    config.write_text("report:\n  preparation: conventional\n")  # CRIC fields are conventional smears
    out = tmp_path / "out"
    assert run_main([str(image), "--mpp", "0.325", "--out", str(out), "--device", "cpu", "--no-progress",
                     "--scheduler", "threads", "--config", str(config)]) == 0
    report = json.loads((out / "cric_mosaic" / "report.json").read_text())
    assert report["model"]["file"] == starter_model_path().name
    assert report["model"]["sha256"] and report["tiling"]["target_mpp"] == 0.5
    assert report["specimen"]["status"] == "ok"  # a Pap preparation, so a category is given
    assert report["category"]["name"] in load_taxonomy().names
    assert report["adequacy"]["minimum"] == 8000 and "conventional" in report["adequacy"]["minimum_source"]
    counts = {c["name"]: c["n_counted"] for c in report["classes"]}
    assert counts["NILM"] >= 10 and report["adequacy"]["squamous_cells"] >= counts["NILM"]
    abnormal = set(load_taxonomy().abnormal_names())
    assert sum(n for name, n in counts.items() if name in abnormal) >= 1
    assert report["category"]["name"] in abnormal


@pytest.mark.slow
def test_demo_uses_held_out_real_crops_and_trains_nothing(tmp_path, cytology_dir, monkeypatch, capsys):
    import wsi_pipeline.demo as demo

    monkeypatch.setattr(demo, "DEMO_SLIDE_SIZE", 4000)
    monkeypatch.setenv("WSI_PIPELINE_CACHE", str(tmp_path / "cache"))
    assert run_main(["--demo", "--out", str(tmp_path / "demo"), "--crops", str(cytology_dir / "cell_crops"),
                     "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "real held-out crops" in printed and "planted high-grade cells" in printed
    cached = sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*") if p.is_file())
    # nothing trained: the cache holds at most the model's ONNX export for the CPU runtime
    assert all(p.parts[0] == "onnx" and p.suffix == ".onnx" for p in cached), cached
    report = json.loads((tmp_path / "demo" / "demo_tct" / "report.json").read_text())
    assert report["model"]["file"] == starter_model_path().name


def test_demo_crop_bank_holds_only_crops_held_out_of_training(cytology_dir):
    from wsi_pipeline.synth.composite import CropBank
    from wsi_pipeline.synth.config import load_synth_config

    cfg = load_synth_config().composite
    test_bank = CropBank.load(cytology_dir / "cell_crops", cfg, split="test")
    train_bank = CropBank.load(cytology_dir / "cell_crops", cfg, split="train")
    test_files = {f for files in test_bank.crops.values() for f in files}
    train_files = {f for files in train_bank.crops.values() for f in files}
    assert test_files and train_files and not test_files & train_files
    assert set(test_bank.crops) == set(train_bank.crops)  # every class has held-out crops
