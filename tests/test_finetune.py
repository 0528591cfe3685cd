"""Fine-tuning the bundled starter model on a lab's own annotations: `wsi data build` -> `wsi train
configs/finetune.yaml` (init_weights: starter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import load_train_config
from wsi_pipeline.errors import ArtifactError, ConfigError
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import read_checkpoint_file
from wsi_pipeline.models.detector import build_detector
from wsi_pipeline.models.losses import build_loss
from wsi_pipeline.models.training import detector_spec, initialise_from_checkpoint
from wsi_pipeline.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
FINETUNE = ROOT / "configs" / "finetune.yaml"


def first_key(state: dict, suffix: str) -> str:
    return next(k for k in state if k.endswith(suffix))


def test_annotated_field_to_finetuned_model_through_the_cli(tmp_path, cytology_dir, capsys):
    field = sorted((cytology_dir / "cric").glob("*.webp"))[1]  # a field with LSIL nuclei
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "build", "--out", str(data), "--slide", str(field), "--annotations",
                 str(field.with_suffix(".geojson")), "--mpp", "0.3", "--target-mpp", "0.5", "--patch-size", "256",
                 "--no-progress"]) == 0
    assert main(["train", str(FINETUNE), "--data", str(data), "--out", str(run), "--epochs", "1", "--device", "cpu",
                 "--no-progress"]) == 0
    starter = read_checkpoint_file(starter_model_path())["model"]
    tuned = read_checkpoint_file(run / "model.pt")["model"]
    frozen = [k for k in starter if "_conv_stem" in k or "_bn0" in k]  # stem: frozen (trainable_backbone_layers 3)
    assert frozen, "no frozen stem weights found"
    for key in frozen:
        torch.testing.assert_close(tuned[key].float(), starter[key].float())
    head = first_key(starter, "classification_head.cls_logits.weight")
    moved = (tuned[head].float() - starter[head].float()).abs().max()
    assert 0 < moved < 0.05 * starter[head].float().abs().max()  # trained a little, from the starter's weights


def test_finetune_config_matches_the_starter_network():
    cfg = load_train_config(FINETUNE, {"init_weights": "starter"})
    names = load_taxonomy().names
    det = build_detector(detector_spec(cfg, len(names)), build_loss("efl", len(names)))  # another loss is fine
    initialise_from_checkpoint(det, "starter", names)
    starter = read_checkpoint_file(starter_model_path())["model"]
    key = first_key(starter, "bbox_reg.weight")
    torch.testing.assert_close(det.state_dict()[key], starter[key].float())


def test_different_network_or_missing_checkpoint_is_a_one_line_error(tmp_path):
    cfg = load_train_config(FINETUNE, {"model": {"fpn_channels": 32}})
    names = load_taxonomy().names
    det = build_detector(detector_spec(cfg, len(names)), build_loss("focal", len(names)))
    with pytest.raises(ArtifactError, match="network differs from the config's model section"):
        initialise_from_checkpoint(det, "starter", names)
    with pytest.raises(ConfigError, match="init_weights must be"):
        load_train_config(FINETUNE, {"init_weights": str(tmp_path / "missing.pt")})


def test_data_build_folder_pairs_slides_with_annotations_beside_them(tmp_path):
    from wsi_pipeline.datasets.slides import annotated_pairs

    for name in ("a.png", "a.geojson", "b.tif", "b.xml", "c.jpg", "notes.txt", "lonely.geojson"):
        (tmp_path / name).write_bytes(b"x")
    assert annotated_pairs(tmp_path) == [(tmp_path / "a.png", tmp_path / "a.geojson"), (tmp_path / "b.tif", tmp_path / "b.xml")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="no slide or image with annotations"):
        annotated_pairs(empty)
    assert main(["data", "build", "--out", str(tmp_path / "out")]) == 2  # neither pairs nor a folder: one-line error


def test_two_training_sets_train_together_and_must_agree(make_dataset, tmp_path):
    from wsi_pipeline.models.checkpoint import load_checkpoint
    from wsi_pipeline.models.data import CocoPatchDataset, ConcatPatchDataset

    a, b = make_dataset(tmp_path / "a", n_images=3), make_dataset(tmp_path / "b", n_images=2, seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "target_mpp: 1.0\npatch_size: 64\ndevice: cpu\nmodel: {detector: fcos, fpn_channels: 32}\n"
        "augment: {enabled: false}\nschedule: {epochs: 1, batch_size: 5, optimizer: adamw, lr: 0.001, warmup_iters: 1}\n")
    assert main(["train", str(config), "--data", str(a), "--data", str(b), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    training = load_checkpoint(tmp_path / "run" / "model.pt").meta["training"]
    assert training["num_images"] == 5 and training["dataset"] == f"{a}, {b}"
    both = ConcatPatchDataset([CocoPatchDataset(a), CocoPatchDataset(b)])
    assert [both.image_labels(i) == CocoPatchDataset(b).image_labels(i - 3) for i in range(3, 5)] == [True, True]
    other = make_dataset(tmp_path / "c", n_images=1, names=[f"C{i}" for i in range(10)])
    with pytest.raises(ArtifactError, match="differ from"):
        ConcatPatchDataset([CocoPatchDataset(a), CocoPatchDataset(other)])
    with pytest.raises(ConfigError, match="train_data' must be a string"):
        load_train_config(overrides={"train_data": 3})
