"""DetectorSpec with per-family params: nested layout, migration of flat (old) checkpoint specs, the
`model.head` config section, and a new family as one module plus one registry line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from wsi_pipeline.config import load_train_config, read_yaml
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.registry import UnknownNameError
from wsi_pipeline.models import fcos
from wsi_pipeline.models.detector import FAMILIES, DetectorSpec, build_detector
from wsi_pipeline.models.fcos import FCOSParams
from wsi_pipeline.models.heads import FPN_STRIDES, DetectorFamily
from wsi_pipeline.models.losses import SigmoidFocalLoss
from wsi_pipeline.models.retinanet import RetinaNetParams
from wsi_pipeline.models.training import check_registry_names, detector_spec

CONFIGS = Path(__file__).parents[1] / "configs"

# meta["architecture"] of the bundled starter model, written before the families had their own params
FLAT_STARTER_SPEC = {
    "num_classes": 10, "detector": "fcos", "backbone": "efficientnet_lite0", "image_size": 256, "fpn_channels": 64,
    "anchor_sizes": [16, 32, 64, 128, 256], "anchor_scales": [1.0, 1.2599210498948732, 1.5874010519681994],
    "aspect_ratios": [1.0], "fg_iou": 0.5, "bg_iou": 0.4, "center_sampling_radius": 1.5, "head_convs": 2,
    "prior_prob": 0.01, "trainable_backbone_layers": 3, "frozen_batchnorm": True, "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5], "topk_candidates": 1000, "detections_per_img": 300, "nms_iou": 0.5,
}


def test_each_family_gets_its_own_params_with_todays_defaults():
    retina, fcos_spec = DetectorSpec(num_classes=2), DetectorSpec(num_classes=2, detector="fcos")
    assert retina.head == RetinaNetParams(anchor_sizes=[16, 32, 64, 128, 256], aspect_ratios=[0.5, 1.0, 2.0],
                                          fg_iou=0.5, bg_iou=0.4)
    assert retina.head.anchor_scales == pytest.approx([1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    assert fcos_spec.head == FCOSParams(center_sampling_radius=1.5, head_convs=4)
    assert retina.head is not DetectorSpec(num_classes=2).head  # no shared mutable default


def test_spec_dict_nests_the_family_params_and_round_trips():
    spec = DetectorSpec(num_classes=3, detector="fcos", fpn_channels=32, head=FCOSParams(head_convs=2))
    data = spec.to_dict()
    assert data["head"] == {"center_sampling_radius": 1.5, "head_convs": 2}
    assert not {"head_convs", "anchor_sizes", "center_sampling_radius"} & set(data)
    assert DetectorSpec.from_dict(data) == spec
    # keys a newer version might add are ignored, at the top level and in head, as before
    assert DetectorSpec.from_dict({**data, "future": 1, "head": {**data["head"], "future": 2}}) == spec


def test_flat_spec_of_old_checkpoints_is_migrated():
    spec = DetectorSpec.from_dict(FLAT_STARTER_SPEC)
    assert spec.head == FCOSParams(center_sampling_radius=1.5, head_convs=2)  # RetinaNet's keys dropped
    assert (spec.detector, spec.backbone, spec.fpn_channels, spec.trainable_backbone_layers) == (
        "fcos", "efficientnet_lite0", 64, 3)
    assert spec.frozen_batchnorm and spec.image_mean == [0.5, 0.5, 0.5]
    assert spec.to_dict()["head"] == {"center_sampling_radius": 1.5, "head_convs": 2}

    flat_retina = {**FLAT_STARTER_SPEC, "detector": "retinanet", "anchor_sizes": [8, 16, 32, 64, 128], "fg_iou": 0.6}
    retina = DetectorSpec.from_dict(flat_retina)
    assert retina.head == RetinaNetParams(anchor_sizes=[8, 16, 32, 64, 128], anchor_scales=flat_retina["anchor_scales"],
                                          aspect_ratios=[1.0], fg_iou=0.6, bg_iou=0.4)
    # a flat dict without the detector key is a RetinaNet, the default family then and now
    assert DetectorSpec.from_dict({"num_classes": 2, "fg_iou": 0.7}).head == RetinaNetParams(fg_iou=0.7)


def test_head_must_belong_to_the_family_and_be_valid():
    with pytest.raises(ValueError, match="head of a fcos detector must be a FCOSParams, got RetinaNetParams"):
        DetectorSpec(num_classes=2, detector="fcos", head=RetinaNetParams()).validate()
    with pytest.raises(ValueError, match="head_convs must be 1-8"):
        DetectorSpec(num_classes=2, detector="fcos", head=FCOSParams(head_convs=0)).validate()
    with pytest.raises(ValueError, match="bg_iou"):
        DetectorSpec(num_classes=2, head=RetinaNetParams(fg_iou=0.3, bg_iou=0.4)).validate()
    with pytest.raises(UnknownNameError, match="unknown detector family 'yolo'"):
        DetectorSpec.from_dict({"num_classes": 2, "detector": "yolo"}).validate()


def test_family_params_reach_the_network():
    retina = build_detector(DetectorSpec(num_classes=2, fpn_channels=32, head=RetinaNetParams(
        aspect_ratios=[1.0], anchor_scales=[1.0], fg_iou=0.6, bg_iou=0.3)), SigmoidFocalLoss(2))
    assert retina.model.anchor_generator.num_anchors_per_location() == [1] * len(FPN_STRIDES)
    assert (retina.model.proposal_matcher.high_threshold, retina.model.proposal_matcher.low_threshold) == (0.6, 0.3)
    det = build_detector(DetectorSpec(num_classes=2, detector="fcos", fpn_channels=32,
                                      head=FCOSParams(head_convs=2, center_sampling_radius=2.5)), SigmoidFocalLoss(2))
    assert len(det.model.head.classification_head.conv) == 2 * 3  # conv, GroupNorm, ReLU per layer
    assert det.model.center_sampling_radius == 2.5


# ------------------------------------------------------------------ training config: model.head


def test_every_committed_training_config_has_valid_family_params():
    configs = [p for p in sorted(CONFIGS.glob("*.yaml")) if "model:" in p.read_text() and "detector:" in p.read_text()]
    assert {p.name for p in configs} >= {"train_demo.yaml", "starter.yaml", "longtail.yaml", "efl_official.yaml"}
    for path in configs:
        # a continuation (configs/starter_v3b.yaml) starts from a run this checkout has not made
        init = read_yaml(path).get("init_weights", "")
        cfg = load_train_config(path, {"init_weights": ""} if init.startswith("runs/") else None)
        check_registry_names(cfg, path)
        assert isinstance(detector_spec(cfg, 10).head, FAMILIES[cfg.model.detector].params), path
    starter = detector_spec(load_train_config(CONFIGS / "starter.yaml"), 10)
    assert starter.head == FCOSParams(head_convs=2)  # the bundled model's architecture


def test_model_head_is_checked_against_the_family():
    cfg = load_train_config(overrides={"model": {"detector": "fcos", "head": {"head_convs": 2}}})
    check_registry_names(cfg)
    assert detector_spec(cfg, 4).head == FCOSParams(head_convs=2)
    cfg = load_train_config(overrides={"model": {"head": {"anchor_sizes": [8, 16, 32, 64, 128]}}})
    assert detector_spec(cfg, 4).head == RetinaNetParams(anchor_sizes=[8, 16, 32, 64, 128])

    bad = {
        "unknown key 'model.head.anchor_sizes' (known: center_sampling_radius, head_convs)":
            {"detector": "fcos", "head": {"anchor_sizes": [8, 16, 32, 64, 128]}},
        "'model.head.head_convs' must be an integer": {"detector": "fcos", "head": {"head_convs": "two"}},
        "model.head.head_convs must be 1-8": {"detector": "fcos", "head": {"head_convs": 9}},
        "model.head.anchor_sizes needs 5 values": {"head": {"anchor_sizes": [8, 16]}},
    }
    for message, model in bad.items():
        with pytest.raises(ConfigError, match="^cfg.yaml: " + re.escape(message)) as info:
            check_registry_names(load_train_config(overrides={"model": model}), "cfg.yaml")
        assert "\n" not in str(info.value)


def test_old_flat_family_keys_in_a_config_say_where_they_went():
    with pytest.raises(ConfigError, match=r"model.head_convs is a detector-family setting now under model.head: "
                                          r"write 'head: \{head_convs: ...\}'"):
        load_train_config(overrides={"model": {"detector": "fcos", "head_convs": 2}})
    with pytest.raises(ConfigError, match="model.anchor_sizes .* under model.head"):
        load_train_config(overrides={"model": {"anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32}})


# ------------------------------------------------------------------ a new family: one module, one registry line


@dataclass
class ToyParams:
    """The toy family's own settings (a field no other family has)."""

    branch_convs: int = 1

    def validate(self) -> None:
        if self.branch_convs < 1:
            raise ValueError("branch_convs must be >= 1")


def build_toy(spec, backbone, criterion, transform):
    anchors = AnchorGenerator(tuple((s,) for s in FPN_STRIDES), ((1.0,),) * len(FPN_STRIDES))
    head = fcos.FCOSLossHead(spec.fpn_channels, 1, spec.num_classes, criterion, spec.prior_prob, spec.head.branch_convs)
    return FCOS(backbone, spec.num_classes, anchor_generator=anchors, head=head, **transform)


TOY = DetectorFamily(params=ToyParams, build=build_toy, decode=fcos.decode, ranking_scores=fcos.ranking_scores)


def test_a_new_family_is_one_module_and_one_registry_line(monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", TOY)  # the registry line

    spec = DetectorSpec(num_classes=2, detector="toy", fpn_channels=64, image_size=64)
    assert spec.head == ToyParams()
    spec = DetectorSpec.from_dict({**spec.to_dict(), "head": {"branch_convs": 3}})
    assert spec.head == ToyParams(branch_convs=3)
    det = build_detector(spec, SigmoidFocalLoss(2))
    assert len(det.model.head.classification_head.conv) == 3 * 3
    out = det.predict(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), score_threshold=0.0)
    assert out[0]["class_scores"].shape[1] == 2 and len(out[0]["boxes"]) > 0
    with pytest.raises(ValueError, match="branch_convs must be >= 1"):
        build_detector(DetectorSpec(num_classes=2, detector="toy", head=ToyParams(0)), SigmoidFocalLoss(2))

    # the training config takes the new family and its params without any change to config.py
    cfg = load_train_config(overrides={"patch_size": 64, "model": {"detector": "toy", "head": {"branch_convs": 2}}})
    check_registry_names(cfg)
    assert detector_spec(cfg, 2).head == ToyParams(branch_convs=2)
    with pytest.raises(ConfigError, match=r"unknown key 'model.head.head_convs' \(known: branch_convs\)"):
        check_registry_names(load_train_config(overrides={"model": {"detector": "toy", "head": {"head_convs": 2}}}))
