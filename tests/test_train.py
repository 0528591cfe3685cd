"""`wsi train` / `wsi evaluate` on a tiny drawn COCO dataset; repeat-factor sampling; config checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import load_train_config
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.models.checkpoint import load_checkpoint
from wsi_pipeline.models.data import CocoPatchDataset, RepeatFactorSampler, repeat_factors
from wsi_pipeline.models.training import check_registry_names
from wsi_pipeline.taxonomy import load_taxonomy

PATCH = 64


def write_config(tmp_path: Path, data: Path, **extra) -> Path:
    cfg = {
        "train_data": str(data), "out": str(tmp_path / "run"), "target_mpp": 1.0, "patch_size": PATCH,
        "model": {"fpn_channels": 32, "head": {"anchor_sizes": [8, 16, 32, 64, 128]}},
        "loss": {"name": "gradlibra"},
        "schedule": {"epochs": 1, "batch_size": 3, "optimizer": "adamw", "lr": 0.001, "warmup_iters": 2},
        **extra,
    }
    path = tmp_path / "train.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_resume_and_evaluate_through_the_cli(make_dataset, tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    config = write_config(tmp_path, data)
    out = tmp_path / "run"
    assert main(["train", str(config), "--no-progress"]) == 0
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1] and len(epochs[0]["pos_neg"]) == 10

    # a second run into the same folder must not overwrite it silently
    assert main(["train", str(config), "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err

    first = load_checkpoint(out / "last.pt")
    assert first.training_state["epoch"] == 1
    assert main(["train", str(config), "--resume", "--epochs", "2", "--no-progress"]) == 0
    resumed = load_checkpoint(out / "model.pt")
    assert resumed.meta["training"]["epochs"] == 2
    assert resumed.meta["training"]["iterations"] == 2 * first.training_state["iteration"]
    assert resumed.meta["loss"]["name"] == "gradlibra" and resumed.meta["taxonomy"] == load_taxonomy().names
    # the loss statistics kept accumulating across the resume
    assert torch.all(resumed.detector.criterion.neg_grad > first.detector.criterion.neg_grad)

    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(out / "model.pt"), str(data), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "HSIL" in printed and "rare-class mAP" in printed
    metrics = json.loads(report.read_text())
    assert metrics["num_boxes"]["HSIL"] + metrics["num_boxes"]["NILM"] == 12
    assert metrics["per_class_ap"]["LSIL"] is None  # no LSIL in the data: not scored
    assert "HSIL" in metrics["rare_classes"] and 0.0 <= metrics["map50_95"] <= 1.0


def test_dataset_that_does_not_match_the_taxonomy_is_a_one_line_error(make_dataset, tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_images=1, names=[f"C{i}" for i in range(10)])
    assert main(["train", str(write_config(tmp_path, data)), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "annotations.json" in err and "taxonomy" in err and "\n" not in err


def test_missing_dataset_and_bad_config_are_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "nowhere")
    assert main(["train", str(config)]) == 1
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="loss.name"):
        check_registry_names(load_train_config(overrides={"loss": {"name": "magic"}}))
    assert main(["train", str(config), "--loss", "magic"]) == 2  # a usage error, before any work
    assert "loss.name must be one of" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(overrides={"schedule": {"epoch": 3}})
    assert main(["evaluate", str(tmp_path / "none.pt"), str(tmp_path)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_dataset_geometry_must_match_the_config(make_dataset, tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_images=1)
    config = write_config(tmp_path, data, target_mpp=0.5)
    assert main(["train", str(config)]) == 2  # config does not match the data: usage error
    assert "target_mpp" in capsys.readouterr().err


def test_augmented_samples_keep_boxes_on_the_discs(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "data", n_images=2)
    ds = CocoPatchDataset(data, augment=load_train_config().augment)
    ds.transform.set_random_seed(3)
    for _ in range(5):
        image, target = ds[0]
        assert image.shape == (PATCH, PATCH, 3) and image.dtype == torch.uint8  # float only on the device
        for box in target["boxes"]:
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            centre = image[(y0 + y1) // 2, (x0 + x1) // 2].float() / 255
            assert centre.mean() < 0.75  # the disc (dark) moved with its box; background is ~0.88


def test_stain_robust_augmentation_changes_colour_and_keeps_the_boxes(make_dataset, tmp_path):
    data = make_dataset(tmp_path / "data", n_images=1)
    augment = load_train_config("configs/starter_stain_robust.yaml").augment
    assert augment.stain_prob > 0 and augment.illuminant_prob > 0 and augment.grayscale_prob > 0
    colour_only = dataclasses.replace(augment, flips=False, rotate90=False, scale=0.0, hsv_shift=0.0,
                                      brightness_contrast=0.0, blur_prob=0.0, jpeg_prob=0.0)  # only the three new ones
    plain = CocoPatchDataset(data)[0]
    ds = CocoPatchDataset(data, augment=colour_only)
    ds.transform.set_random_seed(0)
    hue_changed = grey = 0
    for _ in range(60):
        image, target = ds[0]
        assert torch.equal(target["boxes"], plain[1]["boxes"])  # colour transforms never move a box
        spread = (image.float().amax(dim=2) - image.float().amin(dim=2)).mean()
        grey += bool(spread < 1)  # ToGray: equal channels
        hue_changed += bool((image.float().mean(dim=(0, 1)) - plain[0].float().mean(dim=(0, 1))).abs().max() > 3)
    assert grey >= 1 and hue_changed >= 25  # 1 - 0.5 * 0.7 * 0.9 = 69% of draws change colour


def test_augmentation_probabilities_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment: {stain_prob: 1.5}\n")
    with pytest.raises(ConfigError, match="stain_prob"):
        load_train_config(bad)


def test_repeat_factor_sampler_oversamples_images_with_rare_classes():
    labels = [{0}] * 90 + [{0, 1}] * 10  # class 1 in 10% of images
    factors = repeat_factors(labels, threshold=0.4)
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(2.0)
    sampler = RepeatFactorSampler(factors, seed=1)
    counts = np.bincount(sampler.indices(), minlength=100)
    assert np.all(counts[:90] == 1) and np.all(counts[90:] == 2) and len(sampler) == 110


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("loss", ["efl", "gradlibra"])
def test_cuda_mixed_precision_training_keeps_float32_statistics(make_dataset, tmp_path, loss):
    from wsi_pipeline.models.training import train

    data = make_dataset(tmp_path / "data", n_images=12)
    cfg = load_train_config(write_config(tmp_path, data, device="cuda", precision="auto", loss={"name": loss}))
    result = train(cfg, out_dir=tmp_path / "run", progress=False)
    loaded = load_checkpoint(result.model_path, device="cpu")
    state = loaded.meta["loss"]["state"]
    pos, neg = torch.tensor(state["pos_grad"]), torch.tensor(state["neg_grad"])
    assert torch.isfinite(pos).all() and torch.isfinite(neg).all() and neg.sum() > 0
    assert loaded.detector.criterion.pos_grad.dtype == torch.float32
    assert result.final_loss == result.final_loss  # not NaN


def test_efl_official_recipe_config_decays_the_classification_bias(tmp_path):
    from wsi_pipeline.models.detector import build_detector
    from wsi_pipeline.models.losses import build_loss
    from wsi_pipeline.models.training import build_optimizer, detector_spec

    cfg = load_train_config(Path(__file__).parents[1] / "configs" / "efl_official.yaml",
                            {"model": {"fpn_channels": 32}, "patch_size": 64})
    assert cfg.model.prior_prob == 0.001 and cfg.schedule.optimizer == "sgd" and cfg.schedule.decay_bias_and_norm
    assert cfg.repeat_factor_threshold > 0 and cfg.loss.name == "efl" and cfg.precision == "fp16"
    detector = build_detector(detector_spec(cfg, 10), build_loss("efl", 10))
    optimizer = build_optimizer(detector, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    biases = [(n, p) for n, p in detector.named_parameters() if n.endswith(".bias") and p.requires_grad]
    assert biases and all(id(p) in decayed for _, p in biases)
    cls_bias = [p for n, p in biases if p.numel() == 10]
    assert cls_bias and torch.allclose(cls_bias[0], torch.full((10,), -6.9068), atol=1e-3)  # prior 0.001
    # the default keeps biases out of weight decay
    default = build_optimizer(detector, load_train_config(overrides={"patch_size": 64}))
    decayed = {id(p) for g in default.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not any(id(p) in decayed for _, p in biases)


@pytest.mark.parametrize("loss", ["gradlibra_v2"])
def test_per_class_loss_statistics_logged_and_plotted(make_dataset, tmp_path, loss):
    data = make_dataset(tmp_path / "data", n_images=6)
    config = write_config(tmp_path, data, log_loss_stats_every=1, loss={"name": loss})
    assert main(["train", str(config), "--no-progress"]) == 0
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stats = [r for r in records if r["kind"] == "loss_stats"]
    assert [r["iter"] for r in stats] == [1, 2, 2]  # every iteration (2 batches of 3), then the end
    assert all(len(r["pos_neg"]) == 10 and len(r["beta"]) == 10 for r in stats)
    assert stats[0]["pos_neg"] != [100.0] * 10  # updated by the first backward pass
    png = out / "loss_stats.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
