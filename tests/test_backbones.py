"""Backbone registry: bundled ImageNet EfficientNet-Lite0 really loads (cat / espresso oracle), the
detector's body computes the same features as the reference network, freezing and weight errors."""

from __future__ import annotations

import cv2
import efficientnet_lite_pytorch as efficientnet_lite  # a required dependency: a broken install fails here
import numpy as np
import pytest
import skimage.data
import torch

from wsi_pipeline.errors import ArtifactError, ConfigError
from wsi_pipeline.models.backbones import BACKBONES, build_backbone, resolve_weights
from wsi_pipeline.models.detector import DetectorSpec, build_detector
from wsi_pipeline.models.losses import SigmoidFocalLoss


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    return torch.from_numpy((x / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def lite0_reference() -> torch.nn.Module:
    """The package's own classifier with the bundled weights, as its README loads it."""
    net = efficientnet_lite.EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(resolve_weights("efficientnet_lite0", "imagenet"))
    return net.eval()


def test_bundled_imagenet_weights_classify_cat_and_espresso(lite0_reference):
    with torch.no_grad():
        cat = int(lite0_reference(_imagenet_input(skimage.data.chelsea())).argmax())
        coffee = int(lite0_reference(_imagenet_input(skimage.data.coffee())).argmax())
    assert 281 <= cat <= 285, cat  # ImageNet cat classes
    assert coffee == 967  # espresso


def test_detector_backbone_features_equal_the_reference_network(lite0_reference):
    fpn = build_backbone("efficientnet_lite0", fpn_channels=16, weights="imagenet", frozen_batchnorm=True).eval()
    x = _imagenet_input(skimage.data.chelsea())
    with torch.no_grad():
        ours = fpn.body(x)
        ref = lite0_reference
        h = ref._swish(ref._bn0(ref._conv_stem(x)))
        for block in ref._blocks:
            h = block(h)
    assert [tuple(v.shape[1:]) for v in ours.values()] == [(40, 28, 28), (112, 14, 14), (320, 7, 7)]
    torch.testing.assert_close(ours["2"], h, rtol=1e-4, atol=1e-4)


def test_random_and_pretrained_features_differ():
    x = torch.rand(1, 3, 64, 64)
    a = build_backbone("efficientnet_lite0", 8).eval().body(x)["2"]
    b = build_backbone("efficientnet_lite0", 8, weights="imagenet").eval().body(x)["2"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_trainable_layers_freeze_from_the_bottom(name):
    all_trainable = build_backbone(name, 8, trainable_layers=5).body
    top_only = build_backbone(name, 8, trainable_layers=1).body
    none = build_backbone(name, 8, trainable_layers=0).body
    n_all = sum(p.requires_grad for p in all_trainable.parameters())
    n_top = sum(p.requires_grad for p in top_only.parameters())
    assert n_all == len(list(all_trainable.parameters()))
    assert 0 < n_top < n_all
    assert sum(p.requires_grad for p in none.parameters()) == 0


def test_frozen_batchnorm_has_no_batchnorm_left():
    body = build_backbone("efficientnet_lite0", 8, frozen_batchnorm=True).body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_weight_errors_are_one_line(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ArtifactError, match="not a PyTorch state dict"):
        build_backbone("resnet18", 8, weights=str(bad))
    with pytest.raises(ArtifactError, match="does not match backbone"):
        torch.save(build_backbone("resnet18", 8).body.state_dict(), tmp_path / "r18.pt")
        build_backbone("efficientnet_lite0", 8, weights=str(tmp_path / "r18.pt"))
    with pytest.raises(ConfigError, match="no bundled ImageNet weights"):
        build_backbone("resnet18", 8, weights="imagenet")
    with pytest.raises(ConfigError, match="unknown torchvision weights"):
        build_backbone("resnet18", 8, weights="torchvision:NoSuch_Weights.X")


def test_local_resnet_state_dict_round_trip(tmp_path):
    source = build_backbone("resnet18", 8).body
    torch.save({"state_dict": source.state_dict()}, tmp_path / "r18.pt")
    loaded = build_backbone("resnet18", 8, weights=str(tmp_path / "r18.pt")).body
    torch.testing.assert_close(loaded.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_fcos_on_efficientnet_lite0_trains_one_step():
    spec = DetectorSpec(num_classes=3, detector="fcos", backbone="efficientnet_lite0", image_size=256, fpn_channels=32,
                        image_mean=[0.5] * 3, image_std=[0.5] * 3, frozen_batchnorm=True)
    det = build_detector(spec, SigmoidFocalLoss(3))
    det.train()
    images = [torch.rand(3, 256, 256)]
    targets = [{"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = det(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert det.predict(torch.zeros(1, 128, 128, 3, dtype=torch.uint8), 0.0)[0]["class_scores"].shape[1] == 3
