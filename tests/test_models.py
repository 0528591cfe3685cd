"""Detectors with a pluggable classification loss, Detector.predict, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.registry import UnknownNameError
from wsi_pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from wsi_pipeline.models.detector import FAMILIES, DetectorSpec, build_detector
from wsi_pipeline.models.losses import EqualizedFocalLoss, SigmoidFocalLoss, build_loss
from wsi_pipeline.models.retinanet import RetinaNetParams

C = 3


def tiny_spec(detector: str = "retinanet") -> DetectorSpec:
    return DetectorSpec(num_classes=C, detector=detector, image_size=64, fpn_channels=64)


def one_image_batch():
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 60.0, 52.0]]),
                "labels": torch.tensor([2, 0])}]
    return images, targets


class RecordingFocal(SigmoidFocalLoss):
    """Focal loss that remembers what the head passed to it."""

    def forward(self, logits, targets, avg_factor=1.0):
        self.seen = (logits.detach().clone(), targets.clone(), avg_factor)
        return super().forward(logits, targets, avg_factor)


def test_retinanet_head_passes_valid_anchors_and_matches_torchvision_focal_loss():
    crit = RecordingFocal(C)
    det = build_detector(tiny_spec(), crit)
    model = det.model
    images, targets = one_image_batch()
    image_list, targets_t = model.transform(images, targets)
    features = list(model.backbone(image_list.tensors).values())
    head_outputs = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    matched = [model.proposal_matcher(box_iou(targets_t[0]["boxes"], anchors[0]))]
    ours = model.head.classification_head.compute_loss(targets_t, head_outputs, matched)

    logits, onehot, avg = crit.seen
    ignored = int((matched[0] == Matcher.BETWEEN_THRESHOLDS).sum())
    num_fg = int((matched[0] >= 0).sum())
    assert logits.shape == (anchors[0].shape[0] - ignored, C)
    assert ignored > 0 and num_fg > 0
    assert int(onehot.sum()) == num_fg and avg == num_fg
    assert set(onehot.sum(1).unique().tolist()) <= {0.0, 1.0}
    # torchvision's own loss normalises per image; with one image the two must agree
    reference = RetinaNetClassificationHead.compute_loss(model.head.classification_head, targets_t, head_outputs, matched)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_training_step_updates_loss_statistics(detector):
    det = build_detector(tiny_spec(detector), EqualizedFocalLoss(C))
    det.train()
    images, targets = one_image_batch()
    losses = det(images, targets)
    assert "classification" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    crit = det.criterion
    assert crit.pos_grad[0] > 0 and crit.pos_grad[2] > 0 and crit.pos_grad[1] == 0  # classes present: 0 and 2
    assert torch.all(crit.neg_grad > 0)


@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_predict_returns_per_class_scores_for_uint8_and_float_input(detector):
    det = build_detector(tiny_spec(detector), build_loss("focal", C))
    torch.manual_seed(1)
    for p in det.model.head.parameters():  # spread the scores so some boxes survive
        p.data.normal_(0, 0.05)
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    out_u8 = det.predict(pixels, score_threshold=0.2)
    out_f = det.predict(pixels.permute(0, 3, 1, 2).float() / 255, score_threshold=0.2)
    assert len(out_u8) == 2
    for a, b in zip(out_u8, out_f):
        torch.testing.assert_close(a["boxes"], b["boxes"])
        k = a["boxes"].shape[0]
        assert k > 0
        assert a["class_scores"].shape == (k, C) and a["scores"].shape == (k,) and a["labels"].shape == (k,)
        torch.testing.assert_close(a["scores"], a["class_scores"].max(1).values)
        assert torch.equal(a["labels"], a["class_scores"].argmax(1))
        assert torch.all(a["scores"] > 0.2)
        assert torch.all(a["boxes"] >= 0) and torch.all(a["boxes"] <= 64)
    assert det.training  # predict restores the mode it found


def test_checkpoint_round_trip_keeps_predictions_loss_state_and_meta(tmp_path):
    det = build_detector(tiny_spec(), EqualizedFocalLoss(C, scale_factor=4.0))
    det.train()
    images, targets = one_image_batch()
    sum(det(images, targets).values()).backward()
    det.eval()
    path = save_checkpoint(tmp_path / "m.pt", det, class_names=["A", "B", "C"], target_mpp=0.5, patch_size=64,
                           loss_name="efl", loss_params={"scale_factor": 4.0}, training={"epochs": 3})
    loaded = load_checkpoint(path)
    meta = loaded.meta
    assert meta["taxonomy"] == ["A", "B", "C"] and meta["target_mpp"] == 0.5 and meta["patch_size"] == 64
    assert meta["architecture"]["detector"] == "retinanet" and meta["loss"]["params"] == {"scale_factor": 4.0}
    assert meta["training"]["epochs"] == 3 and len(meta["sha256"]) == 64 and meta["normalisation"]["mean"]
    assert loaded.detector.criterion.scale_factor == 4.0
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        assert torch.equal(getattr(loaded.detector.criterion, name), getattr(det.criterion, name))
    assert meta["loss"]["state"]["pos_neg"] == det.criterion.pos_neg.tolist()
    x = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    a, b = det.predict(x, 0.0)[0], loaded.detector.predict(x, 0.0)[0]
    torch.testing.assert_close(a["class_scores"], b["class_scores"])
    assert not list(tmp_path.glob("*.partial"))


def test_bad_checkpoints_fail_with_one_line_errors(tmp_path):
    with pytest.raises(ArtifactError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ArtifactError, match="not a wsi_pipeline checkpoint") as info:
        load_checkpoint(garbage)
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ArtifactError, match="not a wsi_pipeline checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({"format": "wsi_pipeline.checkpoint", "format_version": 99, "meta": {}, "model": {}}, future)
    with pytest.raises(ArtifactError, match="format version 99"):
        load_checkpoint(future)
    with pytest.raises(ArtifactError, match="not found"):
        load_checkpoint(tmp_path / "nope" / "x.pt")
    with pytest.raises(ArtifactError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_spec_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="backbone"):
        build_detector(DetectorSpec(num_classes=2, backbone="vgg"), SigmoidFocalLoss(2))
    with pytest.raises(ValueError, match="anchor_sizes"):
        build_detector(DetectorSpec(num_classes=2, head=RetinaNetParams(anchor_sizes=[16, 32])), SigmoidFocalLoss(2))
    with pytest.raises(UnknownNameError, match=r"unknown detector family 'yolo' \(known: retinanet, fcos\)"):
        build_detector(DetectorSpec(num_classes=2, detector="yolo"), SigmoidFocalLoss(2))


def test_fcos_regression_starts_alive_from_scratch():
    """relu(bbox_reg) must not start at 0 for most locations (dead boxes stalled whole training runs)."""
    from wsi_pipeline.models.detector import DetectorSpec, build_detector
    from wsi_pipeline.models.losses import SigmoidFocalLoss

    torch.manual_seed(2)
    det = build_detector(DetectorSpec(num_classes=3, detector="fcos", fpn_channels=64, image_size=256), SigmoidFocalLoss(3))
    det.model.eval()
    with torch.no_grad():
        images, _ = det.model.transform([torch.rand(3, 256, 256)])
        features = list(det.model.backbone(images.tensors).values())
        out = det.model.head(features)
    assert (out["bbox_regression"] > 0).float().mean() > 0.99


def test_predict_restores_training_mode_and_leaves_an_eval_model_alone(monkeypatch):
    det = build_detector(tiny_spec("fcos"), build_loss("focal", C))
    pixels = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    det.train()
    det.predict(pixels)
    assert det.training  # a model in training gets its mode back
    det.eval()
    switches = []
    monkeypatch.setattr(det, "train", lambda mode=True: switches.append(mode))
    det.predict(pixels)
    assert switches == []  # no walk over every submodule on each batch of a slide


def test_predict_scores_every_class_of_a_kept_anchor_as_the_full_ranking_would():
    det = build_detector(tiny_spec("fcos"), build_loss("focal", C))
    torch.manual_seed(2)
    for p in det.model.head.parameters():
        p.data.normal_(0, 0.05)
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    det.eval()
    with torch.inference_mode():
        head = det.head_outputs(det.normalise(det.as_float_images(pixels)))
    full = FAMILIES["fcos"].ranking_scores(head)  # every anchor, every class
    for i, out in enumerate(det.predict(pixels, score_threshold=0.2)):
        assert len(out["scores"]) > 0
        # each kept box's class scores are one anchor's row of the full ranking, and its score that row's max
        rows = (full[i][:, None, :] - out["class_scores"][None]).abs().amax(-1).min(0).values
        assert float(rows.max()) < 1e-6
        torch.testing.assert_close(out["scores"], out["class_scores"].max(1).values)
