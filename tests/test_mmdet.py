"""The losses through mmdet's registry and call convention (needs the optional `mmdet` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet.registry", reason="mmdet is not installed (pip install -e '.[mmdet]')")

from mmdet.registry import MODELS  # noqa: E402

from wsi_pipeline.models.losses import build_loss  # noqa: E402
from wsi_pipeline.models.mmdet_adapter import REGISTERED_NAMES, register_mmdet_losses  # noqa: E402

C = 4
CONFIG = Path(__file__).parents[1] / "configs" / "mmdet" / "retinanet_r50_fpn_gradlibra_v2_tct.py"


@pytest.fixture(autouse=True)
def registry_without_mmdet_models(monkeypatch):
    # MODELS.build / MODELS.get import the registry's location, `mmdet.models`, on first use, and
    # that import needs mmcv's compiled ops (absent with mmcv-lite). Marking the locations as
    # already imported bypasses it; our losses are registered by the adapter itself.
    monkeypatch.setattr(MODELS, "_imported", True)
    register_mmdet_losses()


def mmdet_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(40, C, generator=g) * 2
    labels = torch.randint(0, C + 1, (40,), generator=g)  # C = background
    weights = (torch.rand(40, generator=g) > 0.2).float()  # 0: ignored anchor
    return scores, labels, weights


@pytest.mark.parametrize("name", list(REGISTERED_NAMES))
def test_each_loss_builds_through_the_registry_and_matches_the_native_call(name):
    wrapped = MODELS.build(dict(type=REGISTERED_NAMES[name], num_classes=C, use_sigmoid=True, loss_weight=1.0))
    native = build_loss(name, C)
    assert type(wrapped.criterion) is type(native)
    for step in range(3):  # several steps: the gradient statistics must evolve identically
        scores, labels, weights = mmdet_batch(step)
        a = scores.clone().requires_grad_(True)
        value = wrapped(a, labels, weights, avg_factor=5.0)
        keep = weights > 0
        one_hot = torch.nn.functional.one_hot(labels[keep], C + 1)[:, :C].float()
        b = scores[keep].clone().requires_grad_(True)
        expected = native(b, one_hot, avg_factor=5.0)
        torch.testing.assert_close(value, expected)
        value.backward()
        expected.backward()
        torch.testing.assert_close(a.grad[keep], b.grad)
        assert torch.all(a.grad[~keep] == 0)
        for buf_name, buf in native.named_buffers():
            torch.testing.assert_close(dict(wrapped.criterion.named_buffers())[buf_name], buf)


def test_loss_weight_and_parameters_pass_through():
    wrapped = MODELS.build(dict(type="WsiGradLibraV2Loss", num_classes=C, loss_weight=2.0, kappa=0.5, lam=2.0))
    assert wrapped.criterion.kappa == 0.5 and wrapped.criterion.lam == 2.0
    scores, labels, weights = mmdet_batch(0)
    plain = MODELS.build(dict(type="WsiGradLibraV2Loss", num_classes=C, kappa=0.5, lam=2.0))
    torch.testing.assert_close(wrapped(scores, labels, weights, avg_factor=3.0),
                               2.0 * plain(scores, labels, weights, avg_factor=3.0))


def test_shipped_mmdet_config_parses_and_its_loss_builds():
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIG))
    loss_cfg = cfg.model.bbox_head.loss_cls
    assert cfg.model.type == "RetinaNet" and cfg.model.bbox_head.num_classes == 10
    assert cfg.train_dataloader.dataset.type == "ClassBalancedDataset"
    assert cfg.train_dataloader.dataset.dataset.pipeline[0].type == "LoadImageFromFile"
    loss = MODELS.build(loss_cfg)
    assert type(loss.criterion).__name__ == "GradLibraV2Loss" and loss.criterion.num_classes == 10
